"""Credentials kept out of what alignloop stores, logs or writes: a URL's ``user:key@`` and its key-like query values.

An endpoint's URL may carry its credentials (``https://user:key@host/v1``, ``...?api_key=...``). The backend that
connects gets the URL as given, in memory; every copy that lasts (a round's config in DuckDB, a training run's
config and records, an error message, a log line) is :func:`redact_url`'s, so a key never lands there.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

SECRET_PARAM = re.compile(r"(api[-_]?key|key|token|access[-_]?token|secret|password|passwd|pwd|auth|"
                          r"authorization|credentials?|sig|signature|code)", re.IGNORECASE)
"""Query parameters whose values are credentials (``api_key``, ``access_token``, ``sig``, ...)."""
MASK = "***"


def _secret_params(query: str) -> list[tuple[str, str]]:
    return [(k, v) for k, v in parse_qsl(query, keep_blank_values=True) if SECRET_PARAM.fullmatch(k)]


def redact_url(url: str) -> str:
    """``url`` without the credentials it carries: ``user:key@`` dropped, each key-like query value masked
    (``?api_key=***``); a URL without them (or text that is no URL) comes back as it is."""
    parts = urlsplit(url)
    if "@" not in parts.netloc and not _secret_params(parts.query):
        return url
    query = urlencode([(k, MASK if SECRET_PARAM.fullmatch(k) else v)
                       for k, v in parse_qsl(parts.query, keep_blank_values=True)], safe="*")
    return urlunsplit((parts.scheme, parts.netloc.rpartition("@")[2], parts.path, query, parts.fragment))


def url_secrets(url: str) -> list[str]:
    """The credentials ``url`` carries as they appear in it (its user info and password, or a lone user name that
    is a token; its key-like query values, raw and decoded): what :func:`scrub` takes out of a message that may
    quote the URL or a piece of it."""
    parts = urlsplit(url)
    found = []
    if "@" in parts.netloc:
        userinfo = parts.netloc.rpartition("@")[0]
        found += [userinfo, *userinfo.split(":", 1)[1:]] if ":" in userinfo else [userinfo]
    found += [v for _, v in _secret_params(parts.query)]
    found += [raw.partition("=")[2] for raw in parts.query.split("&") if SECRET_PARAM.fullmatch(raw.partition("=")[0])]
    return sorted({s for s in found if s}, key=len, reverse=True)


def redact_urls(fields: dict[str, Any]) -> dict[str, Any]:
    """``fields`` (a config, a form's parameters) as they are stored: each URL field's value (a key ending in
    ``url``: ``judge_base_url``, ``label_studio_url``) through :func:`redact_url`."""
    return {k: redact_url(v) if k.endswith("url") and isinstance(v, str) else v for k, v in fields.items()}


def scrub(text: str, *secrets: str | None) -> str:
    """``text`` with each of ``secrets`` (a key, a URL's credentials) replaced by ``***``."""
    for secret in sorted((s for s in secrets if s), key=len, reverse=True):
        text = text.replace(secret, MASK)
    return text
