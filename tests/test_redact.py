"""mlops_kit.redact: one rule for secret names and values, one mask."""

from __future__ import annotations

import pytest

from mlops_kit import redact


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
