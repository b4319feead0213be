"""HTTP done carefully for range reads: one kept-alive session per file, credentials sent only
to the host they are for, redirects followed by hand (the exposure policy applied to every hop),
429/5xx answers and dropped connections retried with backoff and Retry-After within a budget,
timeouts that say what stalled, bodies read only as far as wanted."""
from __future__ import annotations

import email.utils
import logging
import os
import threading
import time
from urllib.parse import urljoin

from ...errors import BadFileError, ExposureError
from .hub import _linked_sha
from .options import RemoteOptions
from .urls import CIVITAI_HOSTS, HF_HOSTS, _hf_token, _host, hf_endpoint, mask, redact, secret

#: the package's one logger (see :mod:`.urls`: the credential mask filters this logger's records)
log = logging.getLogger(__package__)

#: connections when the server takes one range per request (S3-like, max_ranges 1): SDXL is ~1060
#: spans, so 8 connections at 50 ms are 6.6 s of round trips and 32 are 1.7 s (bench/remote_speed.py)
SINGLE_RANGE_CONNECTIONS = 32
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
TOKEN_HINT = "needs a token: set HF_TOKEN / CIVITAI_API_TOKEN (or pass --header 'Authorization: Bearer ...')"
USER_AGENT = "fpcore (model-fingerprint; range reads)"


class Gate:
    """Requests in flight at once, shared by every file one process reads at the same time (the
    reference-pack job runs many files per worker), and the server's rate limit: after a 429 or
    503 with Retry-After, no request of this process goes to that host before the time it said."""

    def __init__(self, limit: int):
        self.limit = max(1, int(limit))
        self._slots = threading.BoundedSemaphore(self.limit)
        self._lock = threading.Lock()
        self._not_before: dict[str, float] = {}

    def hold(self, host: str, seconds: float) -> None:
        """No request to ``host`` for ``seconds`` from now (Retry-After)."""
        with self._lock:
            self._not_before[host] = max(self._not_before.get(host, 0.0), time.monotonic() + seconds)

    def __call__(self, host: str):
        return _GateSlot(self, host)


class _GateSlot:
    def __init__(self, gate: Gate, host: str):
        self.gate, self.host = gate, host

    def __enter__(self):
        while True:
            with self.gate._lock:
                wait = self.gate._not_before.get(self.host, 0.0) - time.monotonic()
            if wait <= 0:
                break
            time.sleep(min(wait, 1.0))
        self.gate._slots.acquire()
        return self

    def __exit__(self, *exc):
        self.gate._slots.release()


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


class HttpClient:
    """The HTTP side of reading one URL: session, credentials, requests with retries, bodies.
    ``display``: the redacted URL shown to users. :class:`.httpfile.HttpFile` adds the reads."""

    def __init__(self, url: str, display: str | None = None, opts: RemoteOptions | None = None):
        import requests
        from requests.adapters import HTTPAdapter

        self.opts = opts or RemoteOptions()
        self.url = url
        self.display = display or redact(url)
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
        self.sha256: str | None = None
        self.sha256_source: str | None = None
        self.requests = 0
        self.bytes = 0
        self._retry_spent = 0.0
        self._lock = threading.Lock()

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
        from ... import exposure
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
        gate = self.opts.gate
        if gate is not None and after is not None:   # the server said when: every file of this process waits
            gate.hold(_host(self.url), delay)
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
        gate = self.opts.gate
        while True:
            try:
                if gate is None:
                    return fn()
                with gate(_host(self.url)):
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
