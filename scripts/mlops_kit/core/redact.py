"""Secrets never shown: one rule for secret names, one for secret values, one mask, used by everything that
prints, logs or writes (MLflow params and tags, params copies, manifests, notebooks, GoCD logs, error lines).

Names: a name is secret-looking when its words (split at ``.``, ``_``, ``-``, spaces and lower-to-upper case
changes, any case) contain one of :data:`SECRET_WORDS`: ``db_password``, ``apiKey``, ``DB_PWD``,
``AWS_SECRET_ACCESS_KEY`` are; ``tokenizer``, ``passes`` are not (whole words only), nor a count such as
``max_tokens``.

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

import re
import threading
from typing import Any, Mapping
from urllib.parse import urlsplit, urlunsplit

MASK = "***"
MIN_SECRET_LENGTH = 4
SECRET_WORDS = ("password", "passwords", "passwd", "passphrase", "pass", "pwd", "token", "tokens", "secret",
                "secrets", "api key", "apikey", "credential", "credentials", "private key", "privatekey",
                "access key", "accesskey", "account key", "accountkey", "auth key", "client key", "sas key",
                "connection string", "conn str", "bearer", "authorization", "cookie", "sig", "signature")
_COUNT_WORDS = ("max", "min", "num", "n", "total", "count")  # "max tokens" is a number, not a token
_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
_URL_USERINFO = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.\-]*://)[^/\s?#@]*(?:@[^/\s?#@]*)*@")
_NAME_VALUE = re.compile(r"(?P<name>[A-Za-z_][A-Za-z0-9_.\- ]{0,60}?)(?P<eq>\s*=\s*)(?P<value>[^;&\s\"'<>,]+)")
_AUTH_HEADER = re.compile(r"\b(?P<kind>Bearer|Basic)\s+[A-Za-z0-9._~+/=\-]{4,}", re.IGNORECASE)


def is_secret_name(name: str) -> bool:
    """True when a (dotted, snake, kebab or camel case) name looks like it holds a secret (whole words)."""
    words = re.split(r"[._\-\s]+", _CAMEL.sub("_", str(name)).lower())
    text = f" {' '.join(w for w in words if w)} "
    for count in _COUNT_WORDS:
        text = text.replace(f" {count} token ", " ").replace(f" {count} tokens ", " ")
    return any(f" {word} " in text for word in SECRET_WORDS)


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
    text = _NAME_VALUE.sub(_masked_pair, text)
    return _AUTH_HEADER.sub(lambda m: f"{m.group('kind')} {MASK}", text)


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


def has_secrets(values: Any) -> bool:
    return masked(values) != values
