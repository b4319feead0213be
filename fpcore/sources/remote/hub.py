"""Identity without a download: the SHA-256 the hubs publish. Hugging Face's ``X-Linked-ETag``
(sent with the resolve redirect) and paths-info API; Civitai's model-version API
(``/api/v1/model-versions/ID``) for its download links."""
from __future__ import annotations

import json
import logging
import re
from urllib.parse import parse_qsl, urlsplit, urlunsplit

from .urls import HubFile, hf_endpoint, mask

#: the package's one logger (see :mod:`.urls`: the credential mask filters this logger's records)
log = logging.getLogger(__package__)

SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
CIVITAI_DOWNLOAD = re.compile(r"^/api/download/models/(\d+)$")


def _hub_sha256(f: HubFile, token: str | None) -> str | None:
    """The LFS SHA-256 the hub's paths-info API gives (huggingface_hub), or None."""
    try:
        from huggingface_hub import HfApi
    except ImportError:
        return None
    try:
        info = HfApi(endpoint=hf_endpoint()).get_paths_info(f.repo, [f.path], revision=f.revision,
                                                             token=token or False)
        lfs = getattr(info[0], "lfs", None) if info else None
        sha = getattr(lfs, "sha256", None) if lfs is not None else None
        return sha.lower() if sha and SHA256_RE.match(sha.lower()) else None
    except Exception as e:   # no network, private repo, old hub: not knowing the hash is fine
        log.debug("paths-info for %s failed: %s", f.repo, mask(str(e)))
        return None


def _linked_sha(value: str | None) -> str | None:
    if not value:
        return None
    v = value.strip()
    if v.startswith("W/"):
        v = v[2:]
    v = v.strip('"').lower()
    return v if SHA256_RE.match(v) else None


def civitai_api_url(url: str) -> str | None:
    """The model-version API URL for a Civitai download link (``/api/download/models/ID``), else None."""
    p = urlsplit(url)
    m = CIVITAI_DOWNLOAD.match(p.path)
    if not m:
        return None
    return urlunsplit((p.scheme, p.netloc, f"/api/v1/model-versions/{m[1]}", "", ""))


def civitai_sha(data: bytes, url: str, size: int) -> str | None:
    """The SHA-256 the model-version API answer ``data`` lists for the file at download link
    ``url`` (its ``type=`` query picks the file; the primary file first; the listed size must
    match ``size``), or None. Raises ValueError / AttributeError on an answer of the wrong shape."""
    files = json.loads(data).get("files") or []
    qs = dict(parse_qsl(urlsplit(url).query))
    want_type = qs.get("type")
    cands = [f for f in files if isinstance(f, dict) and (not want_type or f.get("type") == want_type)]
    cands.sort(key=lambda f: not f.get("primary"))
    for f in cands:
        sha = str((f.get("hashes") or {}).get("SHA256") or "").lower()
        size_kb = f.get("sizeKB")
        if SHA256_RE.match(sha) and (size_kb is None or abs(size_kb * 1024 - size) < 2048):
            return sha
    return None
