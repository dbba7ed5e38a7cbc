"""Base URLs and secrets: what is sent, and what may be shown.

A base URL is parsed once (`parse_base_url`): credentials in it (`user:password@`) are
refused, because aiohttp turns them into an Authorization header that clashes with the API
key and every message that names the server would print the password; the key belongs in
the vendor's environment variable. A query string (`?api-version=2024-06-01`) is kept and
`BaseUrl.join` puts it on every request path, after the path, not inside it.

Everything shown to a person (errors, logs, reports, cache identities) goes through
`redact_url` or `scrub`: userinfo and key-like query parameters (`key=`, `api_key=`,
`token=`, ...) are masked, and so are the credentials themselves, including the forms a
server echoes them in: another case (`SK-ABC...`), partly masked (`sk-abc...wxyz`,
`sk-****wxyz`, `sk-abc…`), or a fragment of eight or more characters.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit, urlunsplit

from opro.providers.errors import ConfigurationError

MASK = "***"

# A query parameter is secret when its name, lowercased, ends with one of these.
_SECRET_NAME_ENDS = ("key", "token", "secret", "password", "passwd", "signature", "sig", "auth")
_PARAM = re.compile(r"(?i)\b([a-z0-9_\-]*(?:" + "|".join(_SECRET_NAME_ENDS) + r"))=([^&\s'\"<>]+)")
_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://[^\s'\"<>]+")
# Up to the last "@" of the token: a password may itself hold "/" or "@".
_USERINFO = re.compile(r"(://)[^\s'\"<>]*@")
# A partly masked credential: visible start, a run of mask characters, visible end.
_MASKED = re.compile(r"(?P<pre>[A-Za-z0-9_\-]*)(?:\*+|•+|…+|\.{2,})(?P<suf>[A-Za-z0-9_\-]*)")
MIN_VISIBLE = 4  # masked forms showing this many characters of a credential are masked
MIN_FRAGMENT = 8  # bare runs of this many characters of a credential are masked
_WORD = re.compile(rf"[A-Za-z0-9_\-]{{{MIN_FRAGMENT},}}")


def _secret_param(name: str) -> bool:
    return name.lower().endswith(_SECRET_NAME_ENDS)


def _mask_query(query: str) -> tuple[str, list[str]]:
    """The query with secret values masked, and those values (decoded) for scrubbing."""
    parts: list[str] = []
    secrets: list[str] = []
    for item in query.split("&"):
        name, sep, value = item.partition("=")
        if sep and value and _secret_param(name):
            secrets += [value, unquote(value)]
            parts.append(f"{name}={MASK}")
        else:
            parts.append(item)
    return "&".join(parts), secrets


def redact_url(url: str) -> str:
    """`url` without its userinfo and with key-like query values masked (else unchanged)."""
    text = _USERINFO.sub(rf"\1{MASK}@", url)
    try:
        parts = urlsplit(text)
    except ValueError:
        return _PARAM.sub(rf"\1={MASK}", text)
    query, _ = _mask_query(parts.query)
    if query == parts.query:
        return text  # byte for byte, so identities of ordinary URLs never change
    return urlunsplit((parts.scheme, parts.netloc, parts.path, query, parts.fragment))


def _mask_credential(text: str, secret: str) -> str:
    low = secret.lower()
    text = re.sub(re.escape(secret), MASK, text, flags=re.IGNORECASE)
    if len(secret) < MIN_VISIBLE:
        return text

    def masked(m: re.Match[str]) -> str:
        pre, suf = m.group("pre"), m.group("suf")
        shown = len(pre) + len(suf)
        if shown >= MIN_VISIBLE and low.startswith(pre.lower()) and low.endswith(suf.lower()):
            return MASK
        return m.group(0)

    def fragment(m: re.Match[str]) -> str:
        return MASK if m.group(0).lower() in low else m.group(0)

    return _WORD.sub(fragment, _MASKED.sub(masked, text))


def scrub(text: str, secrets: Iterable[str | None] = ()) -> str:
    """`text` fit to show: URLs redacted, key-like parameters and the `secrets` masked."""
    text = _URL.sub(lambda m: redact_url(m.group(0)), text)
    text = _USERINFO.sub(rf"\1{MASK}@", text)
    text = _PARAM.sub(rf"\1={MASK}", text)
    for secret in sorted({s for s in secrets if s}, key=len, reverse=True):
        text = _mask_credential(text, secret)
    return text


@dataclass(frozen=True, slots=True)
class BaseUrl:
    """A checked base URL: `url` is sent, `safe` is shown, `secrets` are scrubbed."""

    url: str
    safe: str
    secrets: tuple[str, ...] = ()

    def join(self, path: str) -> str:
        """`path` appended to the base path, the base's query string after it."""
        parts = urlsplit(self.url)
        return urlunsplit((parts.scheme, parts.netloc, parts.path + path, parts.query, ""))

    def identity(self) -> str:
        """Tells servers apart without holding a secret: the safe URL, plus a digest of
        the real one when secrets were masked out of it (two keys, two connections)."""
        if self.safe == self.url:
            return self.url
        return f"{self.safe}#{hashlib.sha256(self.url.encode()).hexdigest()[:12]}"


def parse_base_url(text: str, *, key_env: str, strip_suffix: str = "") -> BaseUrl:
    """Check a user's base URL; a `ConfigurationError` (one line, no secret) if unusable.

    `key_env` says where the key goes instead of the URL (an environment variable, maybe
    with a hint); `strip_suffix` is a version path the vendor's SDKs leave out (Anthropic's
    /v1, Gemini's /v1beta).
    """
    shown = redact_url(text)
    if "@" in text.partition("?")[0]:  # also "user:pa/ss@host", which urlsplit misreads
        raise ConfigurationError(
            f"base URL {shown!r} contains credentials (user:password@): remove them and "
            f"pass the key in {key_env} instead"
        )
    try:
        parts = urlsplit(text.strip())
        parts.port  # noqa: B018 - raises ValueError when out of range or not a number
    except ValueError as exc:  # its text may quote a password: not shown
        raise ConfigurationError(
            f"base URL {shown!r} is not a valid URL (check its host and port)"
        ) from exc
    if parts.scheme not in ("http", "https"):
        raise ConfigurationError(f"base URL {shown!r} must start with http:// or https://")
    if not parts.hostname:
        raise ConfigurationError(f"base URL {shown!r} names no host")
    path = parts.path.rstrip("/")
    if strip_suffix:
        path = path.removesuffix(strip_suffix)
    url = urlunsplit((parts.scheme, parts.netloc, path, parts.query, ""))
    _, secrets = _mask_query(parts.query)
    return BaseUrl(url=url, safe=redact_url(url), secrets=tuple(secrets))
