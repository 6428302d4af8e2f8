"""mlops_kit.run.html: the executed notebook rendered as standalone HTML, a notebook nbconvert cannot render only
warned about."""

from __future__ import annotations

from pathlib import Path

import pytest

from helpers_notebook import NOTEBOOKS
from mlops_kit.run import html

pytestmark = pytest.mark.slow


def test_render_html(tmp_path: Path) -> None:
    out = tmp_path / "sub" / "x.html"
    html.render(NOTEBOOKS / "fails.ipynb", out)
    text = out.read_text()
    assert text.startswith("<!DOCTYPE html>") and "boom at step" in text


def test_a_notebook_that_cannot_be_rendered_only_warns(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    broken = tmp_path / "broken.ipynb"
    broken.write_text("not a notebook")
    assert not html.render_or_warn(broken, tmp_path / "broken.html")
    assert "HTML rendering failed" in capsys.readouterr().err and not (tmp_path / "broken.html").exists()
