"""Secrets never shown: one rule for secret names, one for secret values, one mask, used by everything that
prints, logs or writes (MLflow params and tags, params copies, manifests, notebooks, GoCD logs, error lines).

Names: a name is secret-looking when its words (split at ``.``, ``_``, ``-``, spaces and lower-to-upper case
changes, any case) contain one of :data:`SECRET_WORDS` (``db_password``, ``apiKey``, ``DB_PWD``, ``pw``,
``AWS_SECRET_ACCESS_KEY``, ``connection_string``), or end with one of :data:`SECRET_LAST_WORDS`: words that are a
secret as a name's last word but only a qualifier elsewhere (``auth``/``basic_auth`` but not ``auth_type``;
``db_pass`` but not ``pass_rate``; ``sig`` but not ``sig_level``; ``dsn``). ``key`` is secret alone and as the last
word (``key``, ``encryption_key``, ``ssh_key``) unless the word before it names a data key (:data:`DATA_KEY_WORDS`:
``sort_key``, ``primary_key``, ``partition_key``, ``cache_key``, ``public_key``). Whole words only: ``tokenizer``,
``keyword``, ``author``, ``passes``, ``secretary`` are not secret, nor a count such as ``max_tokens``.

Values, inside any text: the user-info part of every URL (``https://user:pw@host``, ``https://TOKEN@host``), the
value of every ``name=value`` pair whose name is secret-looking (``Password=…;`` in a connection string,
``?sig=…&token=…`` in a URL) and the credentials of ``Bearer``/``Basic`` authorization values.

Known values: patterns cannot know that ``hunter2`` is a password when a program prints it alone. Whatever part of
the toolkit learns a secret value (a secure GoCD variable, a secret-named parameter, a credential) registers it once
with :func:`register_secret`; from then on :func:`redact` replaces every occurrence of it, in any text, by the mask
(exact value, longest first, so a secret containing another is masked whole). The registry is process-wide: every
writer of the process (console, job logs, files) goes through :func:`redact`. Values shorter than
:data:`MIN_SECRET_LENGTH` characters are not registered: masking every ``1`` or ``abc`` would garble all output
and, by showing where they were masked, reveal them anyway.
"""

from __future__ import annotations

import functools
import re
import threading
from typing import Any, Mapping
from urllib.parse import unquote, urlsplit, urlunsplit

MASK = "***"
MIN_SECRET_LENGTH = 4
SECRET_WORDS = ("password", "passwords", "passwd", "passphrase", "passcode", "pwd", "pw", "token", "tokens",
                "secret", "secrets", "api key", "apikey", "credential", "credentials", "creds", "private key",
                "privatekey", "access key", "accesskey", "account key", "accountkey", "auth key", "client key",
                "sas key", "connection string", "connectionstring", "conn string", "conn str", "connstr",
                "bearer", "authorization")
SECRET_LAST_WORDS = ("pass", "auth", "sig", "signature", "cookie", "cookies", "dsn", "key")
DATA_KEY_WORDS = ("sort", "primary", "foreign", "partition", "join", "group", "cache", "dict", "hash", "lookup",
                  "index", "unique", "composite", "natural", "surrogate", "row", "column", "col", "object", "s3",
                  "bucket", "blob", "public", "idempotency", "merge", "match", "feature", "label", "target",
                  "entity", "table", "file", "metric", "dedup", "shard", "cluster", "distribution", "map",
                  "record", "config", "dataset", "id", "business", "candidate", "routing", "order")
_COUNT_WORDS = ("max", "min", "num", "n", "total", "count")  # "max tokens" is a number, not a token
_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
_URL_USERINFO = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.\-]*://)[^/\s?#@]*(?:@[^/\s?#@]*)*@")
# a name starts a word (not inside "xxxx"): tried at word starts only, not at every character of a huge output;
# ``==`` is a comparison or a pin (``google-auth==2.40.0`` in pip_freeze.txt), never an assignment
_NAME_VALUE = re.compile(r"(?<![A-Za-z0-9])(?P<name>[A-Za-z_][A-Za-z0-9_.\- ]{0,60}?)(?P<eq>\s*=(?!=)\s*)"
                         r"(?P<value>[^;&\s\"'<>,]+)")
_AUTH_HEADER = re.compile(r"(?P<header>authorization\W{1,3})?\b(?P<kind>Bearer|Basic)\s+(?P<cred>[A-Za-z0-9._~+/=\-]{4,})",
                          re.IGNORECASE)
_CRED_LOOK = re.compile(r"[0-9=+/.]|(?=.*[a-z])(?=.*[A-Z]).{12,}")  # "Basic statistics" in a notebook's output is prose


@functools.lru_cache(maxsize=4096)  # a big output repeats its names (``a=1 b=2`` on every line)
def is_secret_name(name: str) -> bool:
    """True when a (dotted, snake, kebab or camel case) name looks like it holds a secret (whole words)."""
    words = re.split(r"[._\-\s]+", _CAMEL.sub("_", str(name)).lower())
    text = f" {' '.join(w for w in words if w)} "
    for count in _COUNT_WORDS:
        text = text.replace(f" {count} token ", " ").replace(f" {count} tokens ", " ")
    if any(f" {word} " in text for word in SECRET_WORDS):
        return True
    last = [w for w in words if w][-1:] or [""]
    before = [w for w in words if w][-2:-1]
    if last[0] == "key":
        return not before or before[0] not in DATA_KEY_WORDS
    return last[0] in SECRET_LAST_WORDS


class _KnownSecrets:
    """The registered secret values and one compiled alternation of them, longest first (rebuilt on change)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: set[str] = set()
        self.pattern: re.Pattern[str] | None = None

    def add(self, value: str) -> None:
        found = {part for part in (value, *value.splitlines(), value.strip()) if len(part) >= MIN_SECRET_LENGTH}
        with self._lock:
            if found <= self._values:
                return
            self._values |= found
            ordered = sorted(self._values, key=len, reverse=True)
            self.pattern = re.compile("|".join(re.escape(v) for v in ordered))

    def clear(self) -> None:
        with self._lock:
            self._values.clear()
            self.pattern = None


_KNOWN = _KnownSecrets()


def register_secret(value: str | None) -> None:
    """Mask ``value`` wherever this process writes text from now on (each of its lines too, for a multi-line
    secret printed line by line). Values shorter than :data:`MIN_SECRET_LENGTH` are ignored."""
    if value:
        _KNOWN.add(str(value))


def register_secrets_in(values: Any, *, secret: bool = False) -> None:
    """Register every secret value inside (nested) ``values``: each text or whole number under a secret-looking
    name (at any depth: ``{"db": {"password": …}}``, ``{"credentials": ["…"]}``), and the credentials inside any
    text (a URL's password or token, a connection string's ``Password=``/``pwd=``, an auth header's), so that
    printed alone later they are masked too."""
    if isinstance(values, Mapping):
        for key, value in values.items():
            register_secrets_in(value, secret=secret or is_secret_name(str(key)))
    elif isinstance(values, (list, tuple)):
        for value in values:
            register_secrets_in(value, secret=secret)
    elif isinstance(values, (str, int)) and not isinstance(values, bool):
        text = str(values)
        if secret:
            _register_value(text)
        for found in credentials_in(text):
            _register_value(found)


# Not secrets whatever the variable's name: the shell's working folders (PWD is not a password)
_NOT_SECRET_VARIABLES = ("PWD", "OLDPWD")
# Secret although the name rule does not say so (one word): what the README lists
SECRET_VARIABLES = ("PGPASSWORD", "PGPASSFILE_CONTENT", "MYSQL_PWD", "MLFLOW_TRACKING_TOKEN",
                    "MLFLOW_TRACKING_PASSWORD", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
                    "AZURE_STORAGE_ACCESS_KEY", "AZURE_STORAGE_CONNECTION_STRING", "UV_INDEX_PASSWORD")
# Names more variables as secret (a GoCD secure variable whose name does not look secret: a job cannot see which
# variables are secure), separated by commas or spaces: <variable name="MLOPS_SECRET_VARIABLES">DB_CONN</variable>
SECRET_VARIABLES_LIST = "MLOPS_SECRET_VARIABLES"
# Flag words are not registered as secrets: masking every "true" would garble all output and tell nothing
_FLAG_WORDS = frozenset({"true", "false", "none", "null", "yes", "no", "on", "off"})


def register_environment(environ: Mapping[str, str]) -> None:
    """Register the secret values of an environment: every variable whose name looks secret, that
    :data:`SECRET_VARIABLES` names or that ``MLOPS_SECRET_VARIABLES`` lists (GoCD hands secure variables to the job
    as variables), and the credentials inside every variable's value (``PIP_INDEX_URL=https://user:pw@…``,
    ``HTTPS_PROXY``)."""
    listed = {n.upper() for n in re.split(r"[\s,;]+", environ.get(SECRET_VARIABLES_LIST, "")) if n}
    for name, value in environ.items():
        if name.upper() in _NOT_SECRET_VARIABLES and name.upper() not in listed:
            continue
        if name.upper() in SECRET_VARIABLES or name.upper() in listed or is_secret_name(name):
            _register_value(value)
        else:
            for found in credentials_in(value):
                _register_value(found)


def _register_value(value: str) -> None:
    if value.strip().lower() not in _FLAG_WORDS:
        register_secret(value)


def credentials_in(text: str) -> list[str]:
    """The secret parts the value patterns find in ``text``: a URL's password (or its lone user, a token), the
    value of a secret-named ``name=value`` pair, an auth header's credentials."""
    if not text or not isinstance(text, str):
        return []
    found = []
    for match in _URL_USERINFO.finditer(text):
        userinfo = match.group(0)[len(match.group("scheme")):-1]
        user, colon, password = userinfo.partition(":")
        found += [password if colon else user, unquote(password if colon else user)]  # p%40ss printed as p@ss
    found += [m.group("value") for m in _NAME_VALUE.finditer(text) if is_secret_name(m.group("name").strip())]
    found += [m.group("cred") for m in _AUTH_HEADER.finditer(text) if _is_credential(m)]
    return [value for value in found if value and value != MASK]


def knows_secrets() -> bool:
    """True once any secret value is registered in this process."""
    return _KNOWN.pattern is not None


def forget_secrets() -> None:
    """Empty the registry (for tests: a process that learned a secret keeps masking it)."""
    _KNOWN.clear()


def redact(text: str) -> str:
    """``text`` with every secret value masked: registered values (exactly), URL user info, secret ``name=value``
    pairs, auth headers."""
    if not text:
        return text
    known = _KNOWN.pattern
    if known is not None:
        text = known.sub(MASK, text)
    text = _URL_USERINFO.sub(lambda m: f"{m.group('scheme')}{MASK}@", text)
    text = _AUTH_HEADER.sub(lambda m: m.group(0)[:m.start("cred") - m.start()] + MASK if _is_credential(m)
                            else m.group(0), text)
    return _masked_pairs(text)


def _is_credential(match: re.Match[str]) -> bool:
    """After ``Authorization:`` always; alone, when it looks like one (a digit, ``=+/.``, mixed case and long)."""
    return bool(match.group("header")) or _CRED_LOOK.search(match.group("cred")) is not None


def _masked_pairs(text: str) -> str:
    """Secret ``name=value`` pairs masked; a long text (a notebook's output) line by line, only lines with a ``=``."""
    if "=" not in text:
        return text
    if len(text) < 4096:
        return _NAME_VALUE.sub(_masked_pair, text)
    return "".join(_NAME_VALUE.sub(_masked_pair, line) if "=" in line else line
                   for line in text.splitlines(keepends=True))


def _masked_pair(match: re.Match[str]) -> str:
    name = match.group("name")
    if not is_secret_name(name.strip()) or match.group("value") == MASK:
        return match.group(0)
    return f"{name}{match.group('eq')}{MASK}"


def strip_credentials(uri: str) -> str:
    """``http://user:pass@host/x`` -> ``http://host/x``: what a published file may keep of a URI (the user gives the
    credentials again, or through MLflow's MLFLOW_TRACKING_USERNAME/PASSWORD variables)."""
    parts = urlsplit(uri)
    if "@" not in parts.netloc:
        return uri
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))


def masked(values: Any, *, name: str = "") -> Any:
    """A copy of (nested) ``values`` with secret-named entries replaced by :data:`MASK` and secret values inside
    strings redacted, at any depth (mappings and lists)."""
    if name and is_secret_name(name) and values is not None:
        return MASK
    if isinstance(values, Mapping):
        return {key: masked(value, name=str(key)) for key, value in values.items()}
    if isinstance(values, (list, tuple)):
        return type(values)(masked(value) for value in values)
    if isinstance(values, str):
        return redact(values)
    return values


def redacted(value: Any) -> Any:
    """A copy of (nested) ``value`` with :func:`redact` applied to every text in it (names are kept as they are):
    for records written as a whole (a manifest, the failure of a run)."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, Mapping):
        return {key: redacted(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(redacted(item) for item in value)
    return value


def redact_known(text: str) -> str:
    """``text`` with the registered values masked, and nothing else: for code (a notebook's cell sources), where
    the patterns would garble ``token=token`` and the like."""
    known = _KNOWN.pattern
    return known.sub(MASK, text) if known is not None and text else text


def has_secrets(values: Any) -> bool:
    return masked(values) != values
