"""The executed notebook as standalone HTML (nbconvert), readable in the MLflow UI's artifact view.

nbconvert's exporter and templates take a while to load the first time: :func:`prewarm_in_background` loads them
in a thread while the runner waits for the kernel and the MLflow run, so rendering at the end costs little. A
notebook nbconvert cannot render must not lose the run: :func:`render_or_warn` only warns.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from ..core import console


def prewarm() -> None:
    """Load nbconvert's HTML exporter and its templates ahead of time."""
    import nbformat

    nb = nbformat.v4.new_notebook()
    code = nbformat.v4.new_code_cell("print(1)", outputs=[nbformat.v4.new_output("stream", text="1\n")])
    nb.cells = [nbformat.v4.new_markdown_cell("# x\n![i](a.png)"), code]  # markdown too: its parser is slow to load
    nb.metadata["language_info"] = {"name": "python", "pygments_lexer": "ipython3"}
    render_text(nb)


def prewarm_in_background() -> threading.Thread:
    """Start :func:`prewarm` in a thread (e.g. while waiting for the kernel or the MLflow run)."""
    def quietly() -> None:
        try:
            prewarm()
        except Exception:  # noqa: BLE001 - only a warm-up: the real rendering reports problems
            pass

    thread = threading.Thread(target=quietly, name="mlops_kit-html-prewarm", daemon=True)
    thread.start()
    return thread


def render_text(nb: Any) -> str:
    from nbconvert import HTMLExporter

    body, _ = HTMLExporter().from_notebook_node(nb)
    return body


def render(notebook: Path, html: Path) -> None:
    """The executed notebook as standalone HTML."""
    import nbformat

    nb = nbformat.read(str(notebook), as_version=4)
    html.parent.mkdir(parents=True, exist_ok=True)
    html.write_text(render_text(nb), encoding="utf-8")


def render_or_warn(notebook: Path, html: Path) -> bool:
    """:func:`render`, but a notebook nbconvert cannot render only warns: the run must not be lost for it."""
    try:
        render(notebook, html)
    except Exception as exc:  # noqa: BLE001 - nbconvert raises template, markdown and OS errors
        reason = " ".join(str(exc).split())[:300]
        console.warn(f"{notebook}: HTML rendering failed ({type(exc).__name__}: {reason}); not logged")
        return False
    return True
