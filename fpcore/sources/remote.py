"""Remote model files, read by HTTP range requests: the header and the sampled ranges only.

A URL is read like a local file, through the same validation (``safetensors.parse_header``,
``element_ranges``, ``coalesce``): a lying or truncated header gives the same one-line error.
What differs is only how bytes arrive:

* the header in one or two requests: a speculative first read of :data:`HEADER_PROBE` bytes,
  then the rest when the header is larger;
* the sampled ranges coalesced (:data:`REMOTE_GAP`, wider than on disk: a request costs a round
  trip) and fetched concurrently over kept-alive connections (:data:`CONNECTIONS`), several ranges
  per request (``multipart/byteranges``) where the server honours it; a server that answers a
  multi-range request with the whole file is cut off after its first block and asked one range
  at a time instead;
* every ranged request carries ``If-Range`` (the ETag, else Last-Modified) and its answer's
  ``Content-Range`` total is checked, so a file that changes between requests is an error, never
  a fingerprint of two files.

Supported sources: ``http(s)://`` (redirects followed by hand, so the exposure policy is applied
to every hop and credentials never leave the host they are for), ``hf://OWNER/REPO/PATH[@REV]``
and ``https://huggingface.co/OWNER/REPO/resolve|blob/REV/PATH`` (through huggingface_hub when it is
installed: ``hf_hub_url``, ``get_token``, ``HfApi.get_paths_info``; ``HF_ENDPOINT`` honoured), and
any other fsspec URL (``s3://``, ``gs://``...) when fsspec and that filesystem are installed.

HTTP goes through ``requests`` (a urllib3 connection pool) with threads rather than fsspec's
aiohttp filesystem: bench/remote_speed.py measures both on the same server. ``requests`` also lets
the reader stop reading a body that should not be there (a 7 GB answer to a Range request), see
every redirect hop, and honour Retry-After.

Identity without a download: Hugging Face's ``X-Linked-ETag`` (the LFS SHA-256, sent with the
resolve redirect) or paths-info, and Civitai's model-version API (``/api/v1/model-versions/ID``)
give the file's SHA-256; the report then says ``hash: "published"``.

Credentials: ``HF_TOKEN`` or huggingface_hub's stored login for the hub's host,
``CIVITAI_API_TOKEN`` for civitai.com, ``headers`` (``--header``) for the URL's own host. Every
secret is registered with :func:`secret` and masked in log records; URLs are shown by
:func:`redact` (no user info, no token-like query values). Errors name the URL as the user gave
it, redacted, and say what to do.
"""
from __future__ import annotations

import email.utils
import logging
import os
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from urllib.parse import parse_qsl, quote, urlencode, urljoin, urlsplit, urlunsplit

from ..errors import BadFileError, ExposureError, UnsupportedError
from .base import MAX_HEADER_BYTES, Source
from .safetensors import coalesce, element_ranges, parse_header_bytes, split_spans

log = logging.getLogger(__name__)

#: first read: one request holds the header of every common checkpoint (SDXL's is ~200 KB,
#: Flux's ~100 KB), so a second request is needed only for an unusually large header
HEADER_PROBE = 1 << 20
#: ranges closer than this share a request: a round trip (tens of ms) costs more than a few
#: hundred KB at broadband speed, and it keeps SDXL under 200 spans (bench/remote_speed.py)
REMOTE_GAP = 256 * 1024
#: kept-alive connections used at once (browsers use 6 per host; the hub's CDN allows more)
CONNECTIONS = 8
#: ... and when the server takes one range per request (S3-like, max_ranges 1): SDXL is ~1060
#: spans, so 8 connections at 50 ms are 6.6 s of round trips and 32 are 1.7 s (bench/remote_speed.py)
SINGLE_RANGE_CONNECTIONS = 32
#: ranges per multi-range request; the Range header stays under 4 KB (nginx's default limit 8 KB)
MAX_RANGES_PER_REQUEST = 64
#: bytes per multi-range request (the answer is held in memory until parsed)
MAX_BYTES_PER_REQUEST = 16 * 1024 * 1024
#: what is read of a body that should not be there (a whole file sent for a range) before closing
FIRST_BLOCK = 64 * 1024
#: per request: seconds to connect and between bytes; and for the whole body
CONNECT_TIMEOUT = 10.0
READ_TIMEOUT = float(os.environ.get("FPCORE_HTTP_TIMEOUT", "30"))
#: retries of 429/5xx answers and dropped connections, their first backoff, the longest
#: Retry-After honoured and the total time spent waiting over one file
RETRIES = 4
BACKOFF = 0.5
MAX_RETRY_AFTER = 30.0
RETRY_BUDGET = 60.0
MAX_REDIRECTS = 10
RETRY_STATUS = (429, 500, 502, 503, 504)
#: query parameters whose values are credentials or signatures (never shown, never stored)
SECRET_PARAMS = re.compile(r"token|key|sig|signature|credential|auth|password|secret|expires|policy", re.I)
HF_HOSTS = ("huggingface.co", "hf.co")
CIVITAI_HOSTS = ("civitai.com",)
TOKEN_HINT = "needs a token: set HF_TOKEN / CIVITAI_API_TOKEN (or pass --header 'Authorization: Bearer ...')"
SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
USER_AGENT = "fpcore (model-fingerprint; range reads)"


# ------------------------------------------------------------------ secrets and URLs

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
for _name in ("urllib3.connectionpool", "urllib3", "requests", "fsspec", "huggingface_hub", __name__):
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


# ------------------------------------------------------------------ options

@dataclass
class RemoteOptions:
    """How to read a URL. ``headers``: extra request headers (``--header``), sent to the URL's own
    host only; ``allow_private``: None = no exposure check (a local user), else
    :func:`fpcore.exposure.check_url` is applied to the URL and every redirect with it."""

    headers: dict | None = None
    allow_private: bool | None = None
    timeout: float | None = None
    connections: int = CONNECTIONS


def parse_header_option(text: str) -> tuple[str, str]:
    """'Name: value' (``--header``) as a pair; the value is registered as a secret."""
    name, sep, value = text.partition(":")
    if not sep or not name.strip() or not re.match(r"^[A-Za-z0-9-]+$", name.strip()):
        from ..errors import UsageError
        raise UsageError("--header takes 'Name: value', e.g. --header 'Authorization: Bearer TOKEN'")
    value = value.strip()
    secret(value)
    if " " in value:
        secret(value.split(" ", 1)[1])
    return name.strip(), value


# ------------------------------------------------------------------ HTTP

class _Changed(Exception):
    pass


class _Retry(Exception):
    def __init__(self, why: str, after: float | None = None):
        super().__init__(why)
        self.why, self.after = why, after


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    v = value.strip()
    if v.isdigit():
        return float(v)
    try:
        when = email.utils.parsedate_to_datetime(v)
        return max(0.0, when.timestamp() - time.time())
    except (TypeError, ValueError):
        return None


def _content_range(value: str | None) -> tuple[int, int, int | None] | None:
    m = re.match(r"^\s*bytes\s+(\d+)-(\d+)/(\d+|\*)\s*$", value or "")
    if not m:
        return None
    return int(m[1]), int(m[2]), (None if m[3] == "*" else int(m[3]))


class HttpFile:
    """A file on an HTTP server, read by ranges. ``display``: the redacted URL shown to users."""

    def __init__(self, url: str, display: str | None = None, opts: RemoteOptions | None = None,
                 hub: HubFile | None = None):
        import requests
        from requests.adapters import HTTPAdapter

        self.opts = opts or RemoteOptions()
        self.url = url
        self.display = display or redact(url)
        self.hub = hub
        self.timeout = (CONNECT_TIMEOUT, self.opts.timeout or READ_TIMEOUT)
        self.session = requests.Session()
        self.session.trust_env = True   # proxies from the environment; .netrc is not read for our hosts
        adapter = HTTPAdapter(pool_connections=2, max_retries=0,
                              pool_maxsize=max(self.opts.connections, SINGLE_RANGE_CONNECTIONS, 2))
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)
        self.session.headers["User-Agent"] = USER_AGENT
        self.session.headers["Accept-Encoding"] = "identity"   # byte offsets are of the stored bytes
        self._auth = self._credentials(url)
        self.final_url = url
        self.size = 0
        self.etag: str | None = None
        self.validator: str | None = None
        self.sha256: str | None = None
        self.sha256_source: str | None = None
        self.multi_range: bool | None = None     # unknown until tried
        self.requests = 0
        self.bytes = 0
        self._retry_spent = 0.0
        self._lock = threading.Lock()
        self.head = b""
        self._whole: bytes | None = None
        try:
            self._probe()
        except BaseException:
            self.close()
            raise

    # -- credentials ------------------------------------------------------------------
    def _credentials(self, url: str) -> dict:
        """Host -> headers: the user's --header for the URL's host; hub and Civitai tokens."""
        out: dict[str, dict] = {}
        host = _host(url)
        if self.opts.headers:
            out.setdefault(host, {}).update(self.opts.headers)
        hf = _hf_token()
        if hf:
            for h in (*HF_HOSTS, _host(hf_endpoint())):
                out.setdefault(h, {}).setdefault("Authorization", f"Bearer {hf}")
        cv = secret(os.environ.get("CIVITAI_API_TOKEN"))
        if cv:
            for h in CIVITAI_HOSTS:
                out.setdefault(h, {}).setdefault("Authorization", f"Bearer {cv}")
        return out

    def _headers_for(self, url: str, extra: dict | None = None) -> dict:
        h = dict(self._auth.get(_host(url), {}))
        if extra:
            h.update(extra)
        return h

    @property
    def sent_credentials(self) -> bool:
        return bool(self._auth.get(_host(self.url)))

    # -- requests -------------------------------------------------------------------
    def _err(self, message: str) -> BadFileError:
        return BadFileError(mask(message), self.display)

    def _check_url(self, url: str) -> None:
        if self.opts.allow_private is None:
            return
        from .. import exposure
        try:
            exposure.check_url(url, self.opts.allow_private)
        except ExposureError as e:
            raise ExposureError(mask(f"{self.display}: {e.message}" if url == self.url else
                                     f"{self.display}: redirected to {redact(url)}: {e.message}")) from None

    def _status_error(self, resp) -> BadFileError:
        code = resp.status_code
        if code in (401, 403):
            given = " (the credentials sent were refused)" if self._headers_for(resp.url or self.url) else ""
            return self._err(f"HTTP {code}: {TOKEN_HINT}{given}")
        if code == 404:
            return self._err("not found (HTTP 404): check the URL, the repository and the revision")
        if code == 416:
            return self._err("the server says the range is not satisfiable (HTTP 416): the file is empty or "
                             "shorter than it said")
        return self._err(f"HTTP {code} {resp.reason or ''}".rstrip())

    def _wait(self, why: str, attempt: int, after: float | None) -> None:
        delay = min(after if after is not None else BACKOFF * (2 ** attempt), MAX_RETRY_AFTER)
        with self._lock:
            if self._retry_spent + delay > RETRY_BUDGET:
                raise self._err(f"{why}; gave up after {attempt + 1} attempts and {self._retry_spent:.0f} s of waiting")
            self._retry_spent += delay
        log.info("%s: %s; retrying in %.1f s", self.display, why, delay)
        time.sleep(delay)

    def _request(self, url: str, headers: dict, follow: bool):
        """One GET (redirects followed by hand when ``follow``); returns (response, final url).
        Raises _Retry for what is worth retrying."""
        import requests
        seen = set()
        for _ in range(MAX_REDIRECTS + 1):
            self._check_url(url)
            try:
                resp = self.session.get(url, headers=self._headers_for(url, headers), stream=True,
                                        allow_redirects=False, timeout=self.timeout)
            except requests.exceptions.ConnectTimeout:
                raise self._err(f"no connection within {CONNECT_TIMEOUT:.0f} s (server down or unreachable?)") from None
            except requests.exceptions.ReadTimeout:
                raise self._err(f"the server sent nothing for {self.timeout[1]:.0f} s (stalled or overloaded); "
                                "try again later or raise FPCORE_HTTP_TIMEOUT") from None
            except requests.exceptions.SSLError as e:
                raise self._err(f"TLS error ({type(e).__name__})") from None
            except (requests.exceptions.ConnectionError, requests.exceptions.ChunkedEncodingError) as e:
                raise _Retry(f"connection failed ({_reason(e)})") from None
            except requests.exceptions.InvalidURL:
                raise self._err("not a valid URL") from None
            except requests.exceptions.RequestException as e:
                raise self._err(f"request failed ({type(e).__name__})") from None
            with self._lock:
                self.requests += 1
            if resp.is_redirect and follow:
                loc = resp.headers.get("Location")
                self._note_linked(resp)
                resp.close()
                nxt = urljoin(url, loc)
                if nxt in seen or nxt == url:
                    raise self._err(f"redirect loop (back to {redact(nxt)})")
                seen.add(url)
                url = nxt
                continue
            if resp.status_code in RETRY_STATUS:
                after = _retry_after(resp.headers.get("Retry-After"))
                code = resp.status_code
                resp.close()
                raise _Retry(f"HTTP {code}" + (" (rate limited)" if code == 429 else ""), after)
            if resp.status_code >= 300:
                err = self._status_error(resp)
                resp.close()
                raise err
            return resp, url
        raise self._err(f"more than {MAX_REDIRECTS} redirects")

    def _note_linked(self, resp) -> None:
        sha = _linked_sha(resp.headers.get("X-Linked-ETag"))
        if sha and not self.sha256:
            self.sha256, self.sha256_source = sha, "hub (X-Linked-ETag)"

    def _with_retries(self, fn):
        attempt = 0
        while True:
            try:
                return fn()
            except _Retry as r:
                if attempt >= RETRIES:
                    raise self._err(f"{r.why}; gave up after {attempt + 1} attempts") from None
                self._wait(r.why, attempt, r.after)
                attempt += 1

    def _read_body(self, resp, limit: int) -> bytes:
        """Up to ``limit`` bytes of the body, with a deadline for the whole body."""
        import requests
        deadline = time.monotonic() + max(self.timeout[1] * 4, 60.0)
        out = bytearray()
        try:
            while len(out) < limit:
                chunk = resp.raw.read(min(1 << 20, limit - len(out)))
                if not chunk:
                    break
                out += chunk
                if time.monotonic() > deadline:
                    raise self._err("the server is sending too slowly (body not complete in time)")
        except (requests.exceptions.RequestException, OSError, _urllib3_errors()) as e:
            if "timed out" in str(e).lower():
                raise self._err(f"the server stopped sending for {self.timeout[1]:.0f} s (stalled); "
                                "try again later or raise FPCORE_HTTP_TIMEOUT") from None
            raise _Retry(f"connection dropped mid-transfer ({_reason(e)})") from None
        with self._lock:
            self.bytes += len(out)
        return bytes(out)

    # -- the first request -----------------------------------------------------------
    def _probe(self) -> None:
        def go():
            resp, final = self._request(self.url, {"Range": f"bytes=0-{HEADER_PROBE - 1}"}, follow=True)
            try:
                self._note_linked(resp)
                self.final_url = final
                etag = resp.headers.get("ETag")
                self.etag = etag
                self.validator = etag if etag and not etag.startswith("W/") else resp.headers.get("Last-Modified")
                if resp.status_code == 206:
                    cr = _content_range(resp.headers.get("Content-Range"))
                    if cr is None or cr[0] != 0 or cr[2] is None:
                        raise self._err(f"unusable Content-Range {resp.headers.get('Content-Range')!r} in the answer")
                    self.size = cr[2]
                    want = cr[1] + 1
                    body = self._read_body(resp, want)
                    if len(body) != want:
                        raise _Retry(f"answer ended after {len(body)} of {want} bytes")
                    self.head = body
                    return
                # 200: the whole file. Fine when it is small; otherwise stop after the first block
                length = resp.headers.get("Content-Length")
                n = int(length) if length and length.isdigit() else None
                if n is not None and n <= HEADER_PROBE:
                    body = self._read_body(resp, n)
                    if len(body) != n:
                        raise _Retry(f"answer ended after {len(body)} of {n} bytes")
                    self.size, self.head, self._whole = n, body, body
                    return
                self._read_body(resp, FIRST_BLOCK)
                what = f"the whole {n:,}-byte file" if n is not None else "the whole file"
                raise self._err(f"the server ignores Range requests (it answered 200 with {what}); stopped after "
                                "the first block instead of downloading it all")
            finally:
                resp.close()
        self._with_retries(go)
        if self.sha256 is None and self.hub is not None:
            sha = _hub_sha256(self.hub, _hf_token())
            if sha:
                self.sha256, self.sha256_source = sha, "hub (paths-info)"
        if self.sha256 is None:
            self._civitai_sha()

    def _civitai_sha(self) -> None:
        """Civitai download links: the model-version API lists the file's SHA-256."""
        p = urlsplit(self.url)
        m = re.match(r"^/api/download/models/(\d+)$", p.path)
        if not m:
            return
        api = urlunsplit((p.scheme, p.netloc, f"/api/v1/model-versions/{m[1]}", "", ""))
        try:
            resp, _ = self._request(api, {"Accept": "application/json"}, follow=True)
            try:
                data = self._read_body(resp, 4 << 20)
            finally:
                resp.close()
            import json
            files = json.loads(data).get("files") or []
            qs = dict(parse_qsl(p.query))
            want_type = qs.get("type")
            cands = [f for f in files if isinstance(f, dict) and (not want_type or f.get("type") == want_type)]
            cands.sort(key=lambda f: not f.get("primary"))
            for f in cands:
                sha = str((f.get("hashes") or {}).get("SHA256") or "").lower()
                size_kb = f.get("sizeKB")
                if SHA256_RE.match(sha) and (size_kb is None or abs(size_kb * 1024 - self.size) < 2048):
                    self.sha256, self.sha256_source = sha, "civitai (model-version API)"
                    return
        except (BadFileError, _Retry, ValueError, AttributeError) as e:
            log.debug("%s: no published hash from the model-version API (%s)", self.display, e)

    # -- ranges ---------------------------------------------------------------------
    def _ranged(self, spec: str) -> dict:
        h = {"Range": f"bytes={spec}"}
        if self.validator:
            h["If-Range"] = self.validator
        return h

    def _check_same(self, resp) -> None:
        etag = resp.headers.get("ETag")
        if self.etag and etag and etag != self.etag:
            raise self._err(f"the file changed on the server while it was read (ETag {self.etag} became {etag}); "
                            "nothing was cached, try again")

    def read(self, n: int, offset: int) -> bytes:
        """Exactly ``n`` bytes at ``offset`` (raises BadFileError)."""
        if n <= 0:
            return b""
        if offset + n <= len(self.head):
            return self.head[offset:offset + n]
        if offset + n > self.size:
            raise self._err(f"file ended early: wanted {n} bytes at offset {offset}, it has {self.size}")
        return self._with_retries(lambda: self._get_one(offset, offset + n))

    def _get_one(self, start: int, end: int) -> bytes:
        resp, _ = self._request(self.final_url, self._ranged(f"{start}-{end - 1}"), follow=True)
        try:
            self._check_same(resp)
            if resp.status_code != 206:
                self._read_body(resp, FIRST_BLOCK)
                raise self._err("the file changed on the server while it was read (If-Range no longer matched: "
                                "the server sent the whole file); nothing was cached, try again")
            cr = _content_range(resp.headers.get("Content-Range"))
            if cr is None or cr[0] != start or cr[1] != end - 1 or (cr[2] is not None and cr[2] != self.size):
                raise self._err(f"the server answered bytes {resp.headers.get('Content-Range')!r} to a request for "
                                f"{start}-{end - 1} of {self.size} (the file changed, or a broken server)")
            body = self._read_body(resp, end - start)
            if len(body) != end - start:
                raise _Retry(f"answer ended after {len(body)} of {end - start} bytes")
            return body
        finally:
            resp.close()

    def _get_multi(self, spans: list[tuple[int, int]]) -> list[bytes] | None:
        """Several ranges in one request; None when the server does not honour it (it started
        sending the whole file: cut off after the first block)."""
        spec = ",".join(f"{s}-{e - 1}" for s, e in spans)
        resp, _ = self._request(self.final_url, self._ranged(spec), follow=True)
        try:
            self._check_same(resp)
            if resp.status_code == 200:
                self._read_body(resp, FIRST_BLOCK)
                return None
            ctype = resp.headers.get("Content-Type", "")
            total = sum(e - s for s, e in spans)
            if not ctype.lower().startswith("multipart/byteranges"):
                # one part: the server merged them into a single range
                cr = _content_range(resp.headers.get("Content-Range"))
                if cr is None or cr[0] > spans[0][0] or cr[1] < spans[-1][1] - 1 or cr[1] - cr[0] > 4 * total + (1 << 20):
                    return None
                body = self._read_body(resp, cr[1] - cr[0] + 1)
                if len(body) != cr[1] - cr[0] + 1:
                    raise _Retry("answer ended early")
                return [body[s - cr[0]:e - cr[0]] for s, e in spans]
            m = re.search(r'boundary="?([^";]+)"?', ctype)
            if not m:
                raise self._err("multipart answer without a boundary")
            length = resp.headers.get("Content-Length")
            limit = int(length) if length and length.isdigit() else total + 200 * len(spans) + 4096
            body = self._read_body(resp, min(limit, total * 2 + 200 * len(spans) + (1 << 20)))
            return self._split_multipart(body, m[1].encode(), spans)
        finally:
            resp.close()

    def _split_multipart(self, body: bytes, boundary: bytes, spans: list[tuple[int, int]]) -> list[bytes]:
        parts: dict[int, tuple[int, bytes]] = {}
        pos = 0
        delim = b"--" + boundary
        while True:
            i = body.find(delim, pos)
            if i < 0 or body[i + len(delim):i + len(delim) + 2] == b"--":
                break
            hend = body.find(b"\r\n\r\n", i)
            if hend < 0:
                raise _Retry("multipart answer ended early")
            head = body[i + len(delim):hend].decode("latin-1")
            m = re.search(r"(?im)^content-range:\s*(.+?)\s*$", head)
            cr = _content_range(m[1] if m else None)
            if cr is None or (cr[2] is not None and cr[2] != self.size):
                raise self._err("multipart answer with a missing or wrong Content-Range (the file changed?)")
            start = hend + 4
            data = body[start:start + cr[1] - cr[0] + 1]
            if len(data) != cr[1] - cr[0] + 1:
                raise _Retry("multipart answer ended early")
            parts[cr[0]] = (cr[1] + 1, data)
            pos = start + len(data)
        out = []
        for s, e in spans:
            hit = next(((ps, pe, d) for ps, (pe, d) in parts.items() if ps <= s and pe >= e), None)
            if hit is None:
                raise self._err(f"the server's multipart answer lacks bytes {s}-{e - 1}")
            ps, _, d = hit
            out.append(d[s - ps:e - ps])
        return out

    def read_spans(self, spans: list[tuple[int, int]]) -> list[bytes]:
        """The bytes of (start, end) spans, concurrently, several per request where allowed."""
        if self._whole is not None:
            return [self._whole[s:e] for s, e in spans]
        order = sorted(range(len(spans)), key=lambda i: spans[i][0])
        batches: list[list[int]] = []
        cur: list[int] = []
        cur_bytes = 0
        for i in order:
            n = spans[i][1] - spans[i][0]
            if cur and (len(cur) >= MAX_RANGES_PER_REQUEST or cur_bytes + n > MAX_BYTES_PER_REQUEST):
                batches.append(cur)
                cur, cur_bytes = [], 0
            cur.append(i)
            cur_bytes += n
        if cur:
            batches.append(cur)
        out: list[bytes | None] = [None] * len(spans)

        def singles(idx):
            for i in idx:
                out[i] = self._with_retries(lambda i=i: self._get_one(*spans[i]))

        def batch(idx):
            if len(idx) == 1 or self.multi_range is False:
                return singles(idx)
            got = self._with_retries(lambda: self._get_multi([spans[i] for i in idx]))
            if got is None:
                if self.multi_range is not False:
                    log.info("%s: the server does not honour multi-range requests; reading one range at a time",
                             self.display)
                self.multi_range = False
                return singles(idx)
            self.multi_range = True
            for i, b in zip(idx, got):
                out[i] = b

        if len(batches) > 1 and self.multi_range is None and len(batches[0]) > 1:
            # learn whether multi-range works before fanning out (the first batch alone)
            got = self._with_retries(lambda: self._get_multi([spans[i] for i in batches[0]]))
            self.multi_range = got is not None
            if got is not None:
                for i, b in zip(batches[0], got):
                    out[i] = b
                batches = batches[1:]
            else:
                log.info("%s: the server does not honour multi-range requests; reading one range at a time",
                         self.display)
        if self.multi_range is False:  # one range per request: spread single spans over the threads
            batches = [[i] for b in batches for i in b]
        conns = self.opts.connections if self.multi_range is not False else max(self.opts.connections,
                                                                                SINGLE_RANGE_CONNECTIONS)
        n = min(conns, len(batches))
        if n <= 1:
            for b in batches:
                batch(b)
        else:
            with ThreadPoolExecutor(n) as ex:
                list(ex.map(batch, batches))
        return out   # type: ignore[return-value]

    def close(self) -> None:
        s = getattr(self, "session", None)
        if s is not None:
            s.close()


def _urllib3_errors():
    try:
        from urllib3.exceptions import HTTPError
        return HTTPError
    except ImportError:   # pragma: no cover - requests always brings urllib3
        return OSError


def _reason(e: BaseException) -> str:
    """A short reason without URLs (they may carry signed query strings)."""
    text = str(e)
    for pat in ("Connection reset", "Connection refused", "Connection aborted", "Remote end closed",
                "IncompleteRead", "timed out", "Name or service not known", "Temporary failure in name resolution",
                "No route to host", "Broken pipe", "Connection broken"):
        if pat.lower() in text.lower():
            return pat.lower()
    return type(e).__name__


class FsspecFile:
    """Any other fsspec URL (s3://, gs://, memory://...), read with the filesystem's own range reads."""

    def __init__(self, url: str, display: str | None = None, opts: RemoteOptions | None = None):
        self.url, self.display = url, display or redact(url)
        self.opts = opts or RemoteOptions()
        try:
            import fsspec
            from fsspec.core import url_to_fs
        except ImportError:
            raise UnsupportedError("reading this URL needs fsspec and its filesystem (pip install fsspec s3fs / "
                                   "gcsfs ...)", self.display) from None
        try:
            self.fs, self.fpath = url_to_fs(url)
        except (ImportError, ValueError) as e:
            raise UnsupportedError(f"no filesystem for this URL ({mask(str(e))[:120]})", self.display) from None
        del fsspec
        try:
            info = self.fs.info(self.fpath)
        except FileNotFoundError:
            raise BadFileError("not found", self.display) from None
        except Exception as e:
            raise BadFileError(f"cannot read ({type(e).__name__}: {mask(str(e))[:120]})", self.display) from None
        if info.get("type") == "directory":
            raise BadFileError("is a directory, not a model file", self.display)
        self.size = int(info.get("size") or 0)
        self.etag = info.get("ETag") or info.get("etag") or info.get("md5Hash") or info.get("generation")
        self.etag = str(self.etag) if self.etag else None
        sha = str(info.get("ChecksumSHA256") or info.get("sha256") or "").lower()
        self.sha256 = sha if SHA256_RE.match(sha) else None
        self.sha256_source = "filesystem" if self.sha256 else None
        self.requests, self.bytes = 1, 0
        self.multi_range = False
        self.final_url = url
        self.head = self.read(min(HEADER_PROBE, self.size), 0) if self.size else b""

    def _cat(self, starts, ends) -> list[bytes]:
        try:
            if len(starts) == 1:
                blobs = [self.fs.cat_file(self.fpath, start=starts[0], end=ends[0])]
            else:
                blobs = self.fs.cat_ranges([self.fpath] * len(starts), starts, ends, on_error="raise")
        except Exception as e:
            raise BadFileError(f"read failed ({type(e).__name__}: {mask(str(e))[:120]})", self.display) from None
        self.requests += len(starts)
        self.bytes += sum(len(b) for b in blobs)
        for s, e, b in zip(starts, ends, blobs):
            if len(b) != e - s:
                raise BadFileError(f"file ended early: wanted {e - s} bytes at offset {s}, got {len(b)}", self.display)
        return list(blobs)

    def read(self, n: int, offset: int) -> bytes:
        if offset + n <= len(getattr(self, "head", b"")):
            return self.head[offset:offset + n]
        return self._cat([offset], [offset + n])[0] if n > 0 else b""

    def read_spans(self, spans):
        return self._cat([s for s, _ in spans], [e for _, e in spans]) if spans else []

    def close(self) -> None:
        pass


def open_remote_file(url: str, opts: RemoteOptions | None = None):
    """An HttpFile or FsspecFile for ``url`` (a hub URL resolved first)."""
    display = redact(url)
    hub = parse_hf(url)
    if hub is not None:
        target = hub_url(hub) if url.startswith("hf://") else url.replace("/blob/", "/resolve/", 1)
        return HttpFile(target, display, opts, hub=hub)
    scheme = url.split("://", 1)[0].lower()
    if scheme in ("http", "https"):
        return HttpFile(url, display, opts)
    if opts is not None and opts.allow_private is not None:
        raise ExposureError(f"{display}: only http, https and hf:// URLs are read on a UI reachable by others")
    return FsspecFile(url, display, opts)


# ------------------------------------------------------------------ the source

@dataclass
class RemoteIdentity:
    """What identifies a remote file's content without reading it: the URL as given (redacted),
    ETag, size, and the published SHA-256 when the hub gives one."""

    url: str
    etag: str | None
    size: int
    sha256: str | None
    sha256_source: str | None


class RemoteSafetensors(Source):
    """A safetensors file at a URL: the header from one or two requests, sampled ranges by
    coalesced concurrent range requests."""

    format = "safetensors"

    def __init__(self, f, path: str):
        super().__init__(path)
        self.f = f
        self.size = f.size
        self.remote = RemoteIdentity(f.display, f.etag, f.size, f.sha256, f.sha256_source)
        self._count(len(f.head))
        self.metadata, self.header_len, self.tensors = self._header()
        self.data_start = 8 + self.header_len

    def _header(self):
        from ..errors import HeaderError
        from .safetensors import parse_header
        if self.size < 8 or len(self.f.head) < 8:
            return parse_header(self._read, self.size, self.path)
        n = int.from_bytes(self.f.head[:8], "little")
        if n > MAX_HEADER_BYTES or n < 2 or 8 + n > self.size:
            return parse_header(self._read, self.size, self.path)   # the same errors as a local file
        raw = self.f.head[8:8 + n]
        if len(raw) < n:   # the header is larger than the first read: one more request for the rest
            raw = raw + self._read(n - len(raw), 8 + len(raw))
        if len(raw) != n:
            raise HeaderError("header cut short", self.path)
        return parse_header_bytes(raw, self.size, self.path)

    def _read(self, n: int, offset: int) -> bytes:
        data = self.f.read(n, offset)
        if offset + n > len(self.f.head):
            self._count(len(data))
        return data

    @property
    def stats(self) -> dict:
        return {"requests": self.f.requests, "bytes_transferred": self.f.bytes, "multi_range": self.f.multi_range}

    def read_ranges(self, ranges: list[tuple[int, int]]) -> list[bytes]:
        if not ranges:
            return []
        spans = coalesce(ranges, REMOTE_GAP)
        blobs = self.f.read_spans([(s[0], s[1]) for s in spans])
        self._count(sum(len(b) for b in blobs))
        return split_spans(ranges, spans, blobs)

    def read_elements(self, requests: list[tuple[str, int, int]]) -> list[bytes]:
        return self.read_ranges(element_ranges(self.tensors, requests))

    def close(self) -> None:
        f = getattr(self, "f", None)
        if f is not None:
            f.close()


def open_url(url: str, opts: RemoteOptions | None = None) -> Source:
    """Open a model at a URL (safetensors; other formats are named and refused)."""
    f = open_remote_file(url, opts)
    try:
        magic = f.head[:4]
        # a safetensors file starts with its header length (any first byte, 0x80 included), then "{"
        looks_safetensors = f.head[8:9] == b"{"
        if magic == b"GGUF" or magic[:2] == b"PK" or (magic[:1] == b"\x80" and not looks_safetensors):
            what = "a GGUF file" if magic == b"GGUF" else "a torch checkpoint (.ckpt/.pt)"
            raise UnsupportedError(f"{what}: remote reading supports safetensors files; download it first", f.display)
        return RemoteSafetensors(f, f.display)
    except BaseException:
        f.close()
        raise


def download_hashes(url: str, opts: RemoteOptions | None = None, progress=None) -> dict:
    """SHA-256 / AutoV3 of a remote file by downloading it whole (streamed; nothing written)."""
    import hashlib
    f = open_remote_file(url, opts)
    try:
        size = f.size
        full, tail = hashlib.sha256(), hashlib.sha256()
        n = int.from_bytes(f.head[:8], "little") if len(f.head) >= 9 else 0
        data_start = 8 + n if f.head[8:9] == b"{" and 8 + n <= size else None
        step = 16 << 20
        done = 0
        while done < size:
            chunk = f.read(min(step, size - done), done)
            full.update(chunk)
            if data_start is not None:
                cut = max(0, data_start - done)
                if cut < len(chunk):
                    tail.update(memoryview(chunk)[cut:])
            done += len(chunk)
            if progress:
                progress(done, size)
        sha = full.hexdigest()
        if f.sha256 and f.sha256 != sha:
            raise BadFileError(f"downloaded bytes hash to {sha[:12]}…, not the published {f.sha256[:12]}… "
                               "(the file changed or the download was corrupted)", f.display)
        return {"sha256": sha, "autov2": sha[:10], "autov3": tail.hexdigest()[:12] if data_start else None,
                "size": size, "hash": "computed", "etag": f.etag}
    finally:
        f.close()
