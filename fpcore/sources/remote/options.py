"""How to read a URL: the options a caller passes (``--header``, the exposure policy, timeout,
connections) and the first read shared by every kind of remote file."""
from __future__ import annotations

import re
from dataclasses import dataclass

from .urls import secret

#: first read: one request holds the header of every common checkpoint (SDXL's is ~200 KB,
#: Flux's ~100 KB), so a second request is needed only for an unusually large header
HEADER_PROBE = 1 << 20
#: kept-alive connections used at once (browsers use 6 per host; the hub's CDN allows more)
CONNECTIONS = 8


@dataclass
class RemoteOptions:
    """How to read a URL. ``headers``: extra request headers (``--header``), sent to the URL's own
    host only; ``allow_private``: None = no exposure check (a local user), else
    :func:`fpcore.exposure.check_url` is applied to the URL and every redirect with it."""

    headers: dict | None = None
    allow_private: bool | None = None
    timeout: float | None = None
    connections: int = CONNECTIONS
    #: requests in flight shared with the other files this process reads (:class:`.client.Gate`):
    #: None = only ``connections`` bounds them
    gate: object | None = None


def parse_header_option(text: str) -> tuple[str, str]:
    """'Name: value' (``--header``) as a pair; the value is registered as a secret."""
    name, sep, value = text.partition(":")
    if not sep or not name.strip() or not re.match(r"^[A-Za-z0-9-]+$", name.strip()):
        from ...errors import UsageError
        raise UsageError("--header takes 'Name: value', e.g. --header 'Authorization: Bearer TOKEN'")
    value = value.strip()
    secret(value)
    if " " in value:
        secret(value.split(" ", 1)[1])
    return name.strip(), value
