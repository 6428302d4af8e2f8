"""mlops_kit.core.redact: one rule for secret names and values, one mask."""

from __future__ import annotations

import subprocess
import sys
from typing import Iterator

import pytest

from helpers import SCRIPTS
from mlops_kit.core import redact


@pytest.mark.parametrize("name", ["password", "DB_PASSWORD", "db.passwd", "api_key", "apiKey", "API-KEY",
                                  "github_token", "client_secret", "aws.secret_access_key", "credentials",
                                  "ssh.private_key", "storage_connection_string", "cfg.pwd", "tokens",
                                  "hf-token", "db.conn_str", "azure.sas_key", "privateKey", "passphrase"])
def test_secret_names(name: str) -> None:
    assert redact.is_secret_name(name)


@pytest.mark.parametrize("name", ["alpha", "author", "n_estimators", "key", "learning_rate", "passes",
                                  "max_tokens", "tokenizer", "num_tokens", "secretary", "cfg.max-tokens"])
def test_plain_names(name: str) -> None:
    assert not redact.is_secret_name(name)


def test_masked_nested_and_none_kept() -> None:
    values = {"user": "ana", "db": {"password": "x", "host": "h"}, "api_key": None, "token": 123}
    assert redact.masked(values) == {"user": "ana", "db": {"password": "***", "host": "h"}, "api_key": None,
                                     "token": "***"}
    assert redact.has_secrets(values) and not redact.has_secrets({"a": 1})


def test_masked_inside_lists() -> None:
    values = {"dbs": [{"host": "a", "password": "hunter2"}, [{"api_key": "k"}], "plain"], "max_tokens": 512}
    assert redact.masked(values) == {"dbs": [{"host": "a", "password": "***"}, [{"api_key": "***"}], "plain"],
                                     "max_tokens": 512}
    assert redact.has_secrets(values) and values["dbs"][0]["password"] == "hunter2"  # the original is untouched


@pytest.mark.parametrize("name", ["DB_PWD", "DB_PASS", "bearer", "Authorization", "SAS_SIG", "AccountKey"])
def test_names_the_two_old_rules_disagreed_on_or_missed(name: str) -> None:
    assert redact.is_secret_name(name)


@pytest.mark.parametrize(("text", "shown"), [
    ("https://ana:hunter2@host:5000/x", "https://***@host:5000/x"),
    ("https://ghp_T0KEN@github.com/org/repo.git", "https://***@github.com/org/repo.git"),
    ("postgresql://u:p@ss:w0rd@db/sales", "postgresql://***@db/sales"),
    ("see http://a:b@h1 and https://c@h2/x", "see http://***@h1 and https://***@h2/x"),
    ("Server=db;User Id=etl;Password=s3cr;Encrypt=yes", "Server=db;User Id=etl;Password=***;Encrypt=yes"),
    ("DefaultEndpointsProtocol=https;AccountName=a;AccountKey=K3y==;", "DefaultEndpointsProtocol=https;AccountName=a;"
     "AccountKey=***;"),
    ("https://acct.blob.core.windows.net/c?sv=2024&sig=AbC%2Bd&se=1", "https://acct.blob.core.windows.net/c?sv=2024&"
     "sig=***&se=1"),
    ("curl -H 'Authorization: Bearer eyJhbGciOi.x.y'", "curl -H 'Authorization: Bearer ***'"),
    ("git@github.com:org/repo.git", "git@github.com:org/repo.git"),  # a user, no secret
    ("sqlite:///C:/a b/mlflow.db", "sqlite:///C:/a b/mlflow.db"),
    ("lr=0.1 n_estimators=300 model=rf", "lr=0.1 n_estimators=300 model=rf"),
    ("mailto:ana@example.com", "mailto:ana@example.com"),
])
def test_secret_values_inside_text(text: str, shown: str) -> None:
    assert redact.redact(text) == shown


def test_masked_redacts_values_at_any_depth_and_strip_credentials() -> None:
    values = {"db_url": "mysql://u:pw@h/d", "sources": ["https://tok@h/x", {"nested": ["x;Password=p;"]}]}
    assert redact.masked(values) == {"db_url": "mysql://***@h/d",
                                     "sources": ["https://***@h/x", {"nested": ["x;Password=***;"]}]}
    assert redact.has_secrets(values)
    assert redact.strip_credentials("https://tok@h:5000/x?y=1") == "https://h:5000/x?y=1"


def test_a_huge_text_is_redacted_without_catastrophic_backtracking() -> None:
    """No regex that backtracks badly: 250 kB of text without a match and 250 kB full of near-misses are masked in
    a fraction of a second; a quadratic pattern would take tens of minutes on them, so the child process's hard
    limit catches one under any machine load without timing anything."""
    code = ("from mlops_kit.core import redact\n"
            "plain, near = 'a' * 250_000, ('http://x' + '@' * 50 + ' ') * 2_500 + 'Password' * 12_500\n"
            "assert redact.redact(plain) == plain and redact.redact(near).count('***') == 2_500\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=SCRIPTS, capture_output=True, text=True, timeout=300,
                          check=False)
    assert done.returncode == 0, done.stderr[-3000:]


@pytest.fixture
def registry() -> Iterator[None]:
    redact.forget_secrets()
    yield
    redact.forget_secrets()


def test_registered_values_are_masked_exactly_anywhere_in_text(registry: None) -> None:
    """A value printed alone has no pattern to give it away: once registered, it is masked wherever it appears."""
    redact.register_secret("hunter2-db")
    assert redact.redact("connecting with hunter2-db now") == "connecting with *** now"
    assert redact.redact("x=hunter2-dbhunter2-db") == "x=******"
    assert redact.redact("hunter2-d") == "hunter2-d", "exact value, not a prefix"


def test_longest_registered_value_is_masked_whole(registry: None) -> None:
    redact.register_secret("abcd")
    redact.register_secret("xxabcdyy")
    assert redact.redact("[xxabcdyy] [abcd]") == "[***] [***]", "not xx***yy: the longer secret wins"


def test_values_shorter_than_four_characters_are_not_registered(registry: None) -> None:
    for value in ("", "1", "ab", "abc", None):
        redact.register_secret(value)
    assert redact.redact("a 1 ab abc") == "a 1 ab abc"
    redact.register_secret("abcd")
    assert redact.redact("abc abcd") == "abc ***"


def test_a_multi_line_secret_is_masked_line_by_line_and_regex_characters_are_literal(registry: None) -> None:
    redact.register_secret("-----BEGIN KEY-----\nMIIEvQ+b/c==\n-----END KEY-----")
    assert redact.redact("MIIEvQ+b/c==\n") == "***\n"
    redact.register_secret("a.b*c(d)")
    assert redact.redact("a.b*c(d) aXb*c(d)") == "*** aXb*c(d)"
