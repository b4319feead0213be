"""Real HTTP servers for remote-reading tests and the remote bench, on 127.0.0.1.

* :class:`Nginx`: Debian's nginx (``nginx-light``) as a private instance (its own config, pid,
  logs and temp folders in a temp dir; no service) serving a folder of generated checkpoints.
  Locations: ``/files/`` (Range and multi-range), ``/norange/`` (``max_ranges 0``: Range ignored,
  200 with the whole file), ``/single/`` (``max_ranges 1``: a multi-range request gets the whole
  file), ``/redirect/`` (302 to ``/files/``, as Civitai's download links redirect to storage),
  ``/loop/`` (redirects to itself), ``/private/`` (needs ``Authorization: Bearer <token>``), a
  Hugging Face-style ``/{owner}/{repo}/resolve/{rev}/{file}`` that answers 302 to ``/files/{file}``
  with ``X-Linked-ETag`` (the file's SHA-256) and ``X-Linked-Size``, like the hub (use it through
  ``HF_ENDPOINT``), and a Civitai-style ``/api/download/models/{id}`` (302) with
  ``/api/v1/model-versions/{id}`` (JSON naming the SHA-256). The access log records method, URI,
  Range header, status and body bytes sent (:meth:`Nginx.log`). With ``delay``, ``/slow/`` serves
  ``/files/`` after waiting that long (nginx's echo module, ``echo_sleep``: latency without a
  proxy's CPU, for benchmarks of many requests at once; :attr:`Nginx.slow_url` is None without it).
* :class:`FaultProxy`: a small threaded HTTP/1.1 proxy in front of it that adds a delay to every
  request (the bench's 50 ms) and injects faults from a list of :class:`Fault` rules: an error
  status (429/503 with Retry-After), a connection reset part-way through a body, a stall.

Both are started by the tests themselves; :func:`nginx_binary` says why nginx is unavailable.
"""
from __future__ import annotations

import hashlib
import http.client
import json
import os
import re
import shutil
import socket
import struct
import subprocess
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

NGINX_CANDIDATES = ("/usr/sbin/nginx", "/usr/bin/nginx")
#: Debian's echo module (libnginx-mod-http-echo, installed with nginx-light): echo_sleep for ``delay``
ECHO_MODULE = "/usr/lib/nginx/modules/ngx_http_echo_module.so"
#: the bearer token the /private/ location accepts
TOKEN = "hf_testTOKEN0123456789secret"


def nginx_binary() -> tuple[str | None, str]:
    """(path to nginx, '') or (None, why it is missing)."""
    for c in (shutil.which("nginx"), *NGINX_CANDIDATES):
        if c and os.access(c, os.X_OK):
            return c, ""
    return None, "nginx is not installed (apt-get install -y nginx-light; .ci/run installs it)"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def sha256_of(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


CONF = """
{modules}
worker_processes 1;
daemon off;
{user}
pid {tmp}/nginx.pid;
error_log {tmp}/error.log warn;
events {{ worker_connections 512; }}
http {{
    default_type application/octet-stream;
    log_format fp '$request_method $request_uri "$http_range" $status $body_bytes_sent';
    access_log {tmp}/access.log fp;
    client_body_temp_path {tmp}/body; proxy_temp_path {tmp}/proxy; fastcgi_temp_path {tmp}/fcgi;
    uwsgi_temp_path {tmp}/uwsgi; scgi_temp_path {tmp}/scgi;
    sendfile on; tcp_nopush on; keepalive_requests 100000; keepalive_timeout 60;
    large_client_header_buffers 4 16k;
    map $uri $linked_etag {{ default ""; {etags} }}
    map $uri $linked_size {{ default ""; {sizes} }}
    server {{
        listen 127.0.0.1:{port};
        location /files/ {{ alias {root}/; }}
        {slow}
        location /norange/ {{ alias {root}/; max_ranges 0; }}
        location /single/ {{ alias {root}/; max_ranges 1; }}
        location /redirect/ {{ rewrite ^/redirect/(.*)$ /files/$1 redirect; }}
        location /loop/ {{ rewrite ^/loop/(.*)$ /loop/$1 redirect; }}
        location /private/ {{
            alias {root}/;
            if ($http_authorization != "Bearer {token}") {{ return 401; }}
        }}
        location /api/download/models/ {{ rewrite ^/api/download/models/([0-9]+)$ /files/civitai-$1.safetensors redirect; }}
        location /api/v1/model-versions/ {{ alias {root}/civitai-api/; default_type application/json; }}
        location ~ ^/([^/]+)/([^/]+)/resolve/([^/]+)/(.+)$ {{
            add_header X-Linked-ETag $linked_etag always;
            add_header X-Linked-Size $linked_size always;
            add_header X-Repo-Commit "0123456789abcdef0123456789abcdef01234567" always;
            return 302 /files/$4;
        }}
    }}
}}
"""


class Nginx:
    """A private nginx serving ``root`` on 127.0.0.1; ``hf`` maps ``owner/repo/rev/file`` (the path of a
    resolve URL) to a file under root, whose SHA-256 and size the resolve answer carries."""

    def __init__(self, root, tmp, hf: dict[str, str] | None = None, sha256: dict[str, str] | None = None,
                 delay: float = 0.0):
        binary, why = nginx_binary()
        if binary is None:
            raise RuntimeError(why)
        self.binary, self.root, self.tmp = binary, Path(root), Path(tmp)
        self.hf = dict(hf or {})
        self.sha = dict(sha256 or {})
        self.port = free_port()
        self.proc: subprocess.Popen | None = None
        self.delay = delay if delay > 0 and os.path.exists(ECHO_MODULE) else 0.0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def slow_url(self) -> str | None:
        """Base URL whose files are served after ``delay`` seconds (None: no echo module, or no delay)."""
        return f"{self.url}/slow" if self.delay else None

    def _conf(self) -> str:
        etags, sizes = [], []
        for path, name in self.hf.items():
            owner, repo, rev, file = path.split("/", 3)
            uri = f"/{owner}/{repo}/resolve/{rev}/{file}"
            sha = self.sha.get(name) or sha256_of(self.root / name)
            etags.append(f'"{uri}" "\\"{sha}\\"";')
            sizes.append(f'"{uri}" "{(self.root / name).stat().st_size}";')
        user = "user root;" if os.geteuid() == 0 else ""
        modules = f"load_module {ECHO_MODULE};" if self.delay else ""
        slow = (f"location ~ ^/slow/(.*)$ {{ echo_sleep {self.delay:.3f}; echo_exec /files/$1; }}" if self.delay
                else "")
        return CONF.format(tmp=self.tmp, port=self.port, root=self.root, token=TOKEN, etags=" ".join(etags),
                           sizes=" ".join(sizes), user=user, modules=modules, slow=slow)

    def start(self) -> "Nginx":
        self.tmp.mkdir(parents=True, exist_ok=True)
        conf = self.tmp / "nginx.conf"
        conf.write_text(self._conf())
        self.proc = subprocess.Popen([self.binary, "-c", str(conf), "-p", str(self.tmp)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.time() + 10
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"nginx exited: {self.proc.stderr.read().decode(errors='replace')[-500:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError("nginx did not start listening within 10 s")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None

    def log(self) -> list[dict]:
        """The access log: one dict per request (method, uri, range, status, bytes)."""
        out = []
        p = self.tmp / "access.log"
        if not p.exists():
            return out
        for line in p.read_text().splitlines():
            m = re.match(r'(\S+) (\S+) "(.*)" (\d+) (\d+)$', line)
            if m:
                out.append({"method": m[1], "uri": m[2], "range": m[3], "status": int(m[4]), "bytes": int(m[5])})
        return out

    def clear_log(self) -> None:
        p = self.tmp / "access.log"
        if p.exists():
            p.write_text("")    # nginx keeps appending at its offset: O_APPEND, so this is safe

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


def civitai_api(root, version_id: int, name: str, sha256: str) -> None:
    """The model-version JSON Civitai's API gives for ``version_id`` (the fields fpcore reads)."""
    d = Path(root) / "civitai-api"
    d.mkdir(exist_ok=True)
    (d / str(version_id)).write_text(json.dumps({
        "id": version_id, "files": [{"name": name, "primary": True, "type": "Model",
                                     "hashes": {"SHA256": sha256.upper(), "AutoV2": sha256[:10].upper()},
                                     "downloadUrl": f"https://civitai.com/api/download/models/{version_id}"}]}))


# ---------------------------------------------------------------------------------- the proxy

@dataclass
class Fault:
    """One injected fault. ``kind``: ``status`` (answer ``status`` with ``headers``, no upstream),
    ``reset`` (send ``after`` bytes of the body, then reset the connection), ``stall`` (send the
    headers and ``after`` bytes, then go silent for ``seconds``), ``delay`` (wait ``seconds`` first).
    It hits requests whose path contains ``match`` (and that carry a Range header when ``ranged``),
    ``times`` times (-1: always), skipping the first ``skip`` matching requests."""

    kind: str
    times: int = 1
    status: int = 503
    headers: dict = field(default_factory=dict)
    after: int = 0
    seconds: float = 0.0
    match: str = ""
    ranged: bool = False
    skip: int = 0
    fn: object = None     # kind "call": run fn() before forwarding (e.g. rewrite the served file)


class FaultProxy:
    """HTTP/1.1 proxy to ``upstream`` (host, port) adding ``delay`` seconds to every request and
    applying :class:`Fault` rules. ``requests`` lists what it saw (method, path, range, fault)."""

    def __init__(self, upstream: tuple[str, int], delay: float = 0.0, faults: list[Fault] | None = None):
        self.upstream, self.delay = upstream, delay
        self.faults = list(faults or [])
        self.requests: list[dict] = []
        self.bytes_sent = 0
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _fault_for(self, path: str, ranged: bool) -> Fault | None:
        with self._lock:
            for f in self.faults:
                if f.match in path and (ranged or not f.ranged) and f.times != 0:
                    if f.skip > 0:
                        f.skip -= 1
                        continue
                    if f.times > 0:
                        f.times -= 1
                    return f
        return None

    def start(self) -> "FaultProxy":
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def setup(self):
                super().setup()
                # no Nagle: a header write and a small body write would otherwise wait for the
                # client's delayed ACK (40 ms on Linux), a latency the real link does not have
                self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

            def _upstream(self) -> http.client.HTTPConnection:
                c = getattr(self, "_conn", None)
                if c is None:
                    c = self._conn = http.client.HTTPConnection(*proxy.upstream, timeout=60)
                return c

            def do_HEAD(self):
                self._handle(body=False)

            def do_GET(self):
                self._handle(body=True)

            def _handle(self, body: bool):
                rng = self.headers.get("Range")
                fault = proxy._fault_for(self.path, bool(rng))
                with proxy._lock:
                    proxy.requests.append({"method": self.command, "path": self.path, "range": rng,
                                           "fault": fault.kind if fault else None})
                if proxy.delay:
                    time.sleep(proxy.delay)
                if fault and fault.kind == "delay":
                    time.sleep(fault.seconds)
                if fault and fault.kind == "call":
                    fault.fn()
                if fault and fault.kind == "status":
                    payload = f"injected {fault.status}".encode()
                    self.send_response(fault.status)
                    for k, v in fault.headers.items():
                        self.send_header(k, v)
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    if body:
                        self.wfile.write(payload)
                    return
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("connection", "keep-alive")}
                try:
                    conn = self._upstream()
                    conn.request(self.command, self.path, headers=headers)
                    resp = conn.getresponse()
                except (OSError, http.client.HTTPException):
                    self._conn = None
                    self.send_error(502)
                    return
                self.send_response(resp.status, resp.reason)
                for k, v in resp.getheaders():
                    if k.lower() not in ("connection", "keep-alive", "transfer-encoding", "server", "date"):
                        self.send_header(k, v)
                self.end_headers()
                if not body:
                    resp.read()
                    return
                sent = 0
                limit = fault.after if fault and fault.kind in ("reset", "stall") else None
                while True:
                    chunk = resp.read(1 << 20)
                    if not chunk:
                        break
                    if limit is not None and sent + len(chunk) >= limit:
                        self.wfile.write(chunk[:max(0, limit - sent)])
                        self.wfile.flush()
                        if fault.kind == "stall":
                            time.sleep(fault.seconds)
                        # RST instead of FIN: SO_LINGER with a zero timeout
                        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                        self._conn.close()
                        self._conn = None
                        self.close_connection = True
                        return
                    self.wfile.write(chunk)
                    sent += len(chunk)
                with proxy._lock:
                    proxy.bytes_sent += sent

        class Server(ThreadingHTTPServer):
            daemon_threads = True
            request_queue_size = 128

        self._server = Server(("127.0.0.1", 0), Handler)
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
