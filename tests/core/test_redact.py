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


@pytest.mark.parametrize("name", ["alpha", "author", "n_estimators", "learning_rate", "passes",
                                  "max_tokens", "tokenizer", "num_tokens", "secretary", "cfg.max-tokens"])
def test_plain_names(name: str) -> None:
    assert not redact.is_secret_name(name)


@pytest.mark.parametrize("name", ["auth", "pw", "db_pw", "basic_auth", "proxy.auth", "passwd", "pwd", "token",
                                  "secret", "key", "encryption_key", "ssh_key", "signingKey", "credential",
                                  "credentials", "creds", "private_key", "connection_string", "ConnectionString",
                                  "dsn", "db_dsn", "passcode", "db_pass", "AZURE_STORAGE_SAS_SIG", "session_cookie"])
def test_issue_17_4_common_secret_names(name: str) -> None:
    """Issue 17.4: ``auth`` and ``pw`` were not secret; the rule checked as a whole against common names."""
    assert redact.is_secret_name(name)


@pytest.mark.parametrize("name", ["keyword", "keywords", "author", "authors", "auth_type", "auth_method",
                                  "auth_url", "auth_enabled", "pass_rate", "pass_threshold", "sig_level",
                                  "sort_key", "primary_key", "partition_key", "cache_key", "public_key", "join_keys",
                                  "keys", "key_column", "keyboard", "monkey", "passthrough", "pwm", "dsn_count",
                                  "SSH_AUTH_SOCK", "signature_version"])
def test_issue_17_4_names_that_only_look_secret(name: str) -> None:
    """A false alarm is not free: a secret name's value is registered and masked in every output of the run."""
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


def test_register_secrets_in_nested_values_and_credentials_inside_text(registry: None) -> None:
    """A secret-named value at any depth (in a list or mapping given with -p or in the params file), a URL's
    password (and its percent-decoded form), a connection string's Password/pwd: each is masked when printed alone."""
    redact.register_secrets_in({"cfg": {"creds": ["list-s3cret", {"x": 123456}]}, "pw": 98765432, "flag": True,
                                "db": "postgresql://etl:p%40ssw0rd@db/sales", "odbc": "Server=db;UID=a;PWD=odbcPw9;",
                                "libpq": "host=db user=a password=libpqPw8 dbname=x", "note": "plain-text",
                                "auth_enabled": "true", "token": "no"})
    text = "list-s3cret 123456 98765432 p%40ssw0rd p@ssw0rd odbcPw9 libpqPw8 plain-text true"
    assert redact.redact(text) == "*** *** *** *** *** *** *** plain-text true"


def test_register_environment(registry: None) -> None:
    """Secret-named variables (GoCD's secure ones arrive so), the README's list, credentials in any URL value;
    PWD is the working folder, not a password, and flag values are never registered."""
    redact.register_environment({"DB_PASSWORD": "envpw-1", "PGPASSWORD": "pgpw-22", "PWD": "/home/ana/work",
                                 "PIP_INDEX_URL": "https://u:idxpw-3@pypi.corp/simple", "HOME": "/home/ana",
                                 "API_TOKEN": "false", "AWS_SECRET_ACCESS_KEY": "awskey-4"})
    assert redact.redact("envpw-1 pgpw-22 idxpw-3 awskey-4 /home/ana/work false") == "*** *** *** *** /home/ana/work false"
    redact.register_environment({"DB_CONN": "secure-but-plain-name", "MLOPS_SECRET_VARIABLES": "OTHER, db_conn"})
    assert redact.redact("secure-but-plain-name") == "***", "a secure variable listed by name"


def test_a_secret_inside_a_longer_word_is_masked_and_base64_is_not(registry: None) -> None:
    """Exact value, anywhere: inside a longer word too. Not covered: an encoded form (base64, hex, URL-encoded by
    the notebook) is another text the toolkit cannot know."""
    import base64

    redact.register_secret("s3cr3tVal")
    assert redact.redact("xxs3cr3tValyy") == "xx***yy"
    encoded = base64.b64encode(b"s3cr3tVal").decode()
    assert redact.redact(encoded) == encoded


def test_redacted_keeps_names_and_masks_every_text(registry: None) -> None:
    redact.register_secret("s3cr3tVal")
    assert redact.redacted({"password": "x", "error_value": "key s3cr3tVal", "n": [1, "s3cr3tVal"]}) == \
        {"password": "x", "error_value": "key ***", "n": [1, "***"]}
    assert redact.redact_known("token=token s3cr3tVal") == "token=token ***"


@pytest.mark.parametrize(("text", "shown"), [
    ("oauth-basic churn-model", "oauth-basic churn-model"),  # a notebook's output is prose too (was "basic ***")
    ("Basic statistics of the bearer of news", "Basic statistics of the bearer of news"),
    ("Authorization: Basic dXNlcjpwYXNz", "Authorization: Basic ***"),  # after the header: always
    ("token Bearer abc123def", "token Bearer ***"),  # alone: when it looks like a credential
    ("Authorization=Bearer sometoken", "Authorization=*** ***"),
])
def test_auth_header_credentials_not_english_words(text: str, shown: str) -> None:
    assert redact.redact(text) == shown


@pytest.mark.parametrize("line", ["google-auth==2.40.0", "requests-auth == 1.0", "if auth == token_b:",
                                  "pw>=3", "key != 'x'"])
def test_a_pin_or_a_comparison_is_not_a_secret_assignment(line: str) -> None:
    """pip_freeze.txt pins packages whose names end like secrets (google-auth): masking them corrupted the audit
    file and made replay refuse the run."""
    assert redact.redact(line) == line


def test_an_assignment_next_to_a_pin_is_still_masked() -> None:
    assert redact.redact("google-auth==2.40.0 auth=sk-live-998877") == "google-auth==2.40.0 auth=***"
