"""A file on an HTTP server, read by ranges: the header from one or two requests, the sampled
spans several per request (``multipart/byteranges``) where the server honours it, else one per
request over more connections; ``If-Range`` on every ranged request and each answer's
``Content-Range`` checked, so a file that changes while it is read is an error."""
from __future__ import annotations

import bisect
import logging
import re
from concurrent.futures import ThreadPoolExecutor

from ...errors import BadFileError
from .client import SINGLE_RANGE_CONNECTIONS, HttpClient, _Retry
from .hub import _hub_sha256, civitai_api_url, civitai_sha
from .options import HEADER_PROBE, RemoteOptions
from .urls import HubFile, _hf_token

#: the package's one logger (see :mod:`.urls`: the credential mask filters this logger's records)
log = logging.getLogger(__package__)

#: ranges per multi-range request; the Range header stays under 4 KB (nginx's default limit 8 KB)
MAX_RANGES_PER_REQUEST = 64
#: bytes per multi-range request (the answer is held in memory until parsed)
MAX_BYTES_PER_REQUEST = 16 * 1024 * 1024
#: what is read of a body that should not be there (a whole file sent for a range) before closing
FIRST_BLOCK = 64 * 1024


def _content_range(value: str | None) -> tuple[int, int, int | None] | None:
    m = re.match(r"^\s*bytes\s+(\d+)-(\d+)/(\d+|\*)\s*$", value or "")
    if not m:
        return None
    return int(m[1]), int(m[2]), (None if m[3] == "*" else int(m[3]))


class HttpFile(HttpClient):
    """A file on an HTTP server, read by ranges. ``display``: the redacted URL shown to users;
    ``hub``: the hub file it is, if any (its published hash is asked for)."""

    def __init__(self, url: str, display: str | None = None, opts: RemoteOptions | None = None,
                 hub: HubFile | None = None):
        super().__init__(url, display, opts)
        self.hub = hub
        self.final_url = url
        self.size = 0
        self.etag: str | None = None
        self.validator: str | None = None
        self.multi_range: bool | None = None     # unknown until tried
        self.head = b""
        self._whole: bytes | None = None
        try:
            self._probe()
        except BaseException:
            self.close()
            raise

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
        api = civitai_api_url(self.url)
        if api is None:
            return
        try:
            resp, _ = self._request(api, {"Accept": "application/json"}, follow=True)
            try:
                data = self._read_body(resp, 4 << 20)
            finally:
                resp.close()
            sha = civitai_sha(data, self.url, self.size)
            if sha:
                self.sha256, self.sha256_source = sha, "civitai (model-version API)"
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
        starts = sorted(parts)                 # the part holding a span: the last one starting at or before it
        out = []
        for s, e in spans:
            i = bisect.bisect_right(starts, s) - 1
            hit = next(((ps, parts[ps]) for ps in starts[max(i, 0)::-1] if parts[ps][0] >= e), None) if i >= 0 else None
            if hit is None:
                raise self._err(f"the server's multipart answer lacks bytes {s}-{e - 1}")
            ps, (_, d) = hit
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
