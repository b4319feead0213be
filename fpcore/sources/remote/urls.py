"""URLs as the user gives them: which are URLs, hub URLs parsed, credentials found, registered
and masked in every log record, URLs redacted for display."""
from __future__ import annotations

import logging
import os
import re
import threading
from dataclasses import dataclass
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

from ...errors import BadFileError

#: one logger for the whole package (the name it had as one module): the credential mask below
#: filters the records of this logger, and a filter does not see a child logger's records
log = logging.getLogger(__package__)

#: query parameters whose values are credentials or signatures (never shown, never stored)
SECRET_PARAMS = re.compile(r"token|key|sig|signature|credential|auth|password|secret|expires|policy", re.I)
HF_HOSTS = ("huggingface.co", "hf.co")
CIVITAI_HOSTS = ("civitai.com",)

_SECRETS: set[str] = set()
_SECRETS_LOCK = threading.Lock()


def secret(value: str | None) -> str | None:
    """Register a credential so no log record shows it; returns it unchanged."""
    if value and len(value) >= 6:
        with _SECRETS_LOCK:
            _SECRETS.add(value)
    return value


def mask(text: str) -> str:
    """``text`` with every registered credential replaced by ``***``."""
    for s in list(_SECRETS):
        if s in text:
            text = text.replace(s, "***")
    return text


class _MaskFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if _SECRETS:
            try:
                msg = record.getMessage()
            except Exception:
                return True
            masked = mask(msg)
            if masked != msg:
                record.msg, record.args = masked, None
        return True


_MASK = _MaskFilter()
for _name in ("urllib3.connectionpool", "urllib3", "requests", "fsspec", "huggingface_hub", __package__):
    logging.getLogger(_name).addFilter(_MASK)


def redact(url: str) -> str:
    """The URL without user info and with token-like query values replaced by ``***``."""
    try:
        p = urlsplit(url)
    except ValueError:
        return "<invalid URL>"
    netloc = p.hostname or ""
    if p.port:
        netloc += f":{p.port}"
    if ":" in (p.hostname or "") and not netloc.startswith("["):
        netloc = f"[{p.hostname}]" + (f":{p.port}" if p.port else "")
    if p.username or p.password:
        secret(p.password)
        secret(p.username)
    q = parse_qsl(p.query, keep_blank_values=True)
    for k, v in q:
        if SECRET_PARAMS.search(k):
            secret(v)
    query = urlencode([(k, "***" if SECRET_PARAMS.search(k) else v) for k, v in q], safe="*/:")
    return mask(urlunsplit((p.scheme, netloc if p.scheme in ("http", "https") else p.netloc, p.path, query, "")))


def is_url(path) -> bool:
    """Whether ``path`` is a URL (``scheme://``) rather than a local path."""
    if not isinstance(path, str):
        path = os.fspath(path) if isinstance(path, os.PathLike) else str(path)
    m = re.match(r"^([A-Za-z][A-Za-z0-9+.-]*)://", path)
    return bool(m) and m.group(1).lower() != "file"


def _host(url: str) -> str:
    return (urlsplit(url).hostname or "").lower()


def hf_endpoint() -> str:
    return (os.environ.get("HF_ENDPOINT") or "https://huggingface.co").rstrip("/")


def _is_hf_host(host: str) -> bool:
    return host in HF_HOSTS or host == _host(hf_endpoint())


def _hf_token() -> str | None:
    tok = os.environ.get("HF_TOKEN") or os.environ.get("HUGGING_FACE_HUB_TOKEN")
    if not tok:
        try:
            from huggingface_hub import get_token   # HF_TOKEN, HF_HOME, the stored `hf auth login`
            tok = get_token()
        except Exception:   # not installed, or an old version
            tok = None
    return secret(tok)


@dataclass
class HubFile:
    repo: str
    path: str
    revision: str


HF_RESOLVE = re.compile(r"^/([^/]+/[^/]+)/(?:resolve|blob)/([^/]+)/(.+)$")


def parse_hf(url: str) -> HubFile | None:
    """``hf://OWNER/REPO/PATH[@REV]`` (or ``hf://OWNER/REPO@REV/PATH``, fsspec's form) and hub
    resolve/blob URLs, as (repo, path, revision); None for other URLs."""
    if url.startswith("hf://"):
        rest = url[5:]
        parts = rest.split("/", 2)
        if len(parts) < 3 or not all(parts):
            raise BadFileError("a hub URL is hf://OWNER/REPO/PATH[@REVISION]", url)
        owner, repo, path = parts
        rev = "main"
        if "@" in repo:
            repo, rev = repo.split("@", 1)
        elif "@" in path:
            path, rev = path.rsplit("@", 1)
        return HubFile(f"{owner}/{repo}", path, rev or "main")
    if url.startswith(("http://", "https://")) and _is_hf_host(_host(url)):
        p = urlsplit(url)
        base = urlsplit(hf_endpoint()).path.rstrip("/")
        path = p.path[len(base):] if base and p.path.startswith(base) else p.path
        m = HF_RESOLVE.match(path)
        if m:
            from urllib.parse import unquote
            return HubFile(m[1], unquote(m[3]), unquote(m[2]))
    return None


def hub_url(f: HubFile) -> str:
    """The resolve URL of a hub file (``HF_ENDPOINT`` honoured)."""
    try:
        from huggingface_hub import hf_hub_url
        return hf_hub_url(f.repo, f.path, revision=f.revision, endpoint=hf_endpoint())
    except ImportError:
        return f"{hf_endpoint()}/{f.repo}/resolve/{quote(f.revision, safe='')}/{quote(f.path)}"
