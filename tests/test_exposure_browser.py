"""An exposed UI in a real browser (issue 19): ``python -m fpcore ui --host 0.0.0.0`` on gradio 3.41.2
and 4.40.0 refuses, one line each, what a visitor must not do, and the same UI on 127.0.0.1 does it.

Each action, exposed and local:

- a models folder, a reference file or a scan folder outside the model folders (``--models-dir``):
  typed directly, through ``..``, through a symbolic link (a linked folder, a linked file);
- "Scan and write tags" and "Add as reference" without ``FPCORE_EXPOSED_WRITES=1``;
- a scan of the model folder that holds links leading outside: scanned, the links skipped and listed;
- a URL to 127.0.0.1, to a private address (10.0.0.1), and to a public address that answers 302 to
  ``http://10.0.0.1/x.safetensors``: refused before any connection to the private address (a
  listener there counts connections), while the public one is read. The local UI reads all three
  (internal addresses are refused on an exposed UI unless ``FPCORE_ALLOW_PRIVATE_URLS=1``; a local UI reads them).

The public and private addresses exist in a private network namespace (``unshare -rn``, the
addresses on its loopback device) holding the UI, the HTTP servers and Chromium; nothing is
reachable from outside it. Where namespaces are unavailable the path and write checks run in the
normal namespace (the UI bound to 0.0.0.0 for the test's duration) and the URL checks skip, saying
why. Needs what tests/test_ui_browser.py needs (.ci/ui_venvs.sh, chromium, playwright).
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import testkit
from test_ui_browser import CHROMIUM, CHROMIUM_ARGS, GRADIOS, _free_port, _pick, _venv_python

ROOT = Path(__file__).resolve().parent.parent
#: a global address (example.com's, IANA's example domain) given to the namespace's loopback device
PUBLIC_IP = "93.184.215.14"
#: the private address the redirect points to; a listener on it counts connections
PRIVATE_IP = "10.0.0.1"
SERVER_START_S = 90

SERVE = textwrap.dedent('''
    """Serve x.safetensors with Range on 127.0.0.1:PORT, PUBLIC:PORT and PRIVATE:80; /redirect on any
    of them answers 302 to http://PRIVATE/x.safetensors. Every accepted connection is logged."""
    import re, sys, threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
    data_path, log_dir, port, public, private = sys.argv[1:6]
    DATA = open(data_path, "rb").read()

    class H(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *a):
            pass

        def do_GET(self):
            self.server.note("GET " + self.path)
            if self.path.startswith("/redirect"):
                self.send_response(302)
                self.send_header("Location", f"http://{private}/x.safetensors")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            if self.path != "/x.safetensors":
                self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            n, rng = len(DATA), re.findall(r"(\\d+)-(\\d*)", self.headers.get("Range") or "")
            if rng:  # several ranges are answered as one span covering them (remote.py accepts that)
                start = min(int(a) for a, _ in rng)
                end = min(max(int(b) if b else n - 1 for _, b in rng), n - 1)
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{end}/{n}")
            else:
                start, end = 0, n - 1
                self.send_response(200)
            self.send_header("Content-Length", str(end - start + 1))
            self.send_header("ETag", '"x1"')
            self.end_headers()
            self.wfile.write(DATA[start:end + 1])

    class S(ThreadingHTTPServer):
        daemon_threads = True

        def note(self, what):
            with open(f"{log_dir}/{self.server_address[0]}.log", "a") as f:
                f.write(what + "\\n")

        def verify_request(self, request, client_address):
            self.note("CONNECT")
            return True

    for addr in (("127.0.0.1", int(port)), (public, int(port)), (private, 80)):
        threading.Thread(target=S(addr, H).serve_forever, daemon=True).start()
    print("ready", flush=True)
    threading.Event().wait()
''')


def _stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@pytest.fixture(scope="module")
def netns():
    """The command prefix that runs a program inside a private network namespace whose loopback
    device also holds PUBLIC_IP and PRIVATE_IP; None (and why) when namespaces are unavailable."""
    missing = [t for t in ("unshare", "nsenter", "ip") if not shutil.which(t)]
    if missing:
        yield None, f"{', '.join(missing)} not installed (util-linux, iproute2)"
        return
    setup = (f"ip link set lo up && ip addr add {PUBLIC_IP}/32 dev lo && ip addr add {PRIVATE_IP}/32 dev lo "
             "&& echo ready && exec sleep 86400")
    proc = subprocess.Popen(["unshare", "-rn", "sh", "-c", setup], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    if proc.stdout.readline().strip() != "ready":
        _stop(proc)
        yield None, f"cannot make a network namespace (unshare -rn): {proc.stderr.read().strip()[-300:]}"
        return
    try:
        yield ["nsenter", "-t", str(proc.pid), "-U", "-n", "--preserve-credentials"], ""
    finally:
        _stop(proc)


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    """models/{a.safetensors, sub/c.safetensors, link_out -> ../outside, sneaky.safetensors ->
    ../outside/b.safetensors}; outside/{a,b}.safetensors (a: the same name as inside, so the
    dropdown's choice exists in both folders); www/x.safetensors (served over HTTP)."""
    d = tmp_path_factory.mktemp("exposure_ui")
    models, outside, www = d / "models", d / "outside", d / "www"
    for p in (models / "sub", outside, www):
        p.mkdir(parents=True)
    spec = testkit.checkpoint_spec("sd1", "tiny")
    a = testkit.random_state_dict(spec, 1)
    testkit.write_safetensors(models / "a.safetensors", a, "F16")
    testkit.write_safetensors(models / "sub" / "c.safetensors", testkit.finetune(a, 0.3, 5, comps=("unet",)), "F16")
    testkit.write_safetensors(outside / "a.safetensors", testkit.random_state_dict(spec, 2), "F16")
    testkit.write_safetensors(outside / "b.safetensors", testkit.random_state_dict(spec, 3), "F16")
    shutil.copy(models / "a.safetensors", www / "x.safetensors")
    os.symlink(outside, models / "link_out")
    os.symlink(outside / "b.safetensors", models / "sneaky.safetensors")
    return d


@pytest.fixture(scope="module")
def http(netns, tree):
    """The HTTP servers inside the namespace: yields (port, log dir) or None."""
    prefix, _ = netns
    if prefix is None:
        yield None
        return
    logs = tree / "http-logs"
    logs.mkdir()
    script = tree / "serve.py"
    script.write_text(SERVE)
    port = _free_port()
    proc = subprocess.Popen([*prefix, sys.executable, str(script), str(tree / "www" / "x.safetensors"), str(logs),
                             str(port), PUBLIC_IP, PRIVATE_IP], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        assert proc.stdout.readline().strip() == "ready", proc.stderr.read()[-2000:]
        yield port, logs
    finally:
        _stop(proc)


def _log(logs: Path, addr: str) -> list[str]:
    p = logs / f"{addr}.log"
    return p.read_text().splitlines() if p.exists() else []


@pytest.fixture(scope="module", params=[(g, m) for g in sorted(GRADIOS) for m in ("exposed", "local")],
                ids=lambda p: f"{p[0]}-{p[1]}")
def ui(request, netns, tree, tmp_path_factory):
    """``python -m fpcore ui`` from the gradio venv: exposed (--host 0.0.0.0, no opt-ins) or local
    (127.0.0.1, no settings either: a local UI reads what its user asks for); each with its own copy of the tree."""
    kind, mode = request.param
    py = _venv_python(kind)
    prefix, _ = netns
    prefix = prefix or []
    work = tmp_path_factory.mktemp(f"{kind}-{mode}")
    for name in ("models", "outside"):
        shutil.copytree(tree / name, work / name, symlinks=True)
    os.unlink(work / "models" / "link_out")
    os.unlink(work / "models" / "sneaky.safetensors")
    os.symlink(work / "outside", work / "models" / "link_out")
    os.symlink(work / "outside" / "b.safetensors", work / "models" / "sneaky.safetensors")
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")
           and k not in ("FPCORE_EXPOSED_WRITES", "FPCORE_ALLOW_PRIVATE_URLS")}
    env.update(PYTHONPATH=str(ROOT), FPCORE_REFS=str(work / "refs"), FPCORE_CACHE=str(work / "cache"),
               GRADIO_ANALYTICS_ENABLED="False", NO_PROXY="*", no_proxy="*")
    host = "0.0.0.0" if mode == "exposed" else "127.0.0.1"
    log = open(work / "server.log", "w+")
    proc = subprocess.Popen([*prefix, py, "-m", "fpcore", "ui", "--host", host, "--port", str(port),
                             "--models-dir", str(work / "models")], cwd=work, env=env, stdout=log,
                            stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    wait = f"import urllib.request as u; u.urlopen({url!r}, timeout=2)"
    t0 = time.monotonic()
    try:
        while True:
            if proc.poll() is not None:
                log.seek(0)
                pytest.fail(f"the UI exited with {proc.returncode}:\n{log.read()[-3000:]}")
            if subprocess.run([*prefix, sys.executable, "-c", wait], capture_output=True).returncode == 0:
                break
            if time.monotonic() - t0 > SERVER_START_S:
                log.seek(0)
                pytest.fail(f"the UI did not answer on {url} within {SERVER_START_S} s:\n{log.read()[-3000:]}")
            time.sleep(0.3)
        yield kind, mode, url, work, prefix
    finally:
        _stop(proc)
        log.seek(0)
        tail = log.read()[-2000:]
        log.close()
        if "Traceback" in tail:
            sys.stderr.write(f"server log ({kind}, {mode}):\n{tail}\n")


@pytest.fixture()
def page(ui, tmp_path):
    """A Chromium page (in the namespace when there is one) on the UI."""
    from playwright.sync_api import expect, sync_playwright
    prefix = ui[4]
    exe = CHROMIUM
    if prefix:
        exe = str(tmp_path / "chromium-in-netns")
        Path(exe).write_text("#!/bin/sh\nexec " + " ".join(prefix) + f' {CHROMIUM} "$@"\n')
        os.chmod(exe, 0o755)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=exe, args=[*CHROMIUM_ARGS, "--no-proxy-server"])
        try:
            pg = browser.new_page(viewport={"width": 1280, "height": 1000})
            pg.set_default_timeout(60_000)
            expect.set_options(timeout=60_000)
            pg.goto(ui[2], wait_until="domcontentloaded")
            pg.wait_for_selector("#mfp_identify")
            yield pg
        finally:
            browser.close()


def el(page, elem_id: str, inner: str = ""):
    """gradio 3 repeats a Markdown's elem_id inside it: the first match."""
    return page.locator(f"#{elem_id} {inner}".strip()).first


#: per output: (the button, the input to empty first) of an action whose answer is a fixed line, so
#: each real answer is waited for even when it repeats the previous one
RESETS = {"mfp_summary": ("mfp_identify_url", "mfp_url", "type a URL first"),
          "mfp_add_status": ("mfp_add_ref", "mfp_ref_path", "Identify a model first"),
          "mfp_scan_status": ("mfp_scan", "mfp_folder", "not a folder")}


def _answer(page, elem_id: str, field: str, value: str, button: str) -> str:
    """Show the reset line in ``elem_id``, then type ``value`` into ``field``, click ``button`` and
    return ``elem_id``'s text once the answer replaced the reset line."""
    from playwright.sync_api import expect
    reset_button, reset_field, reset_text = RESETS[elem_id]
    _fill(page, reset_field, "")
    el(page, reset_button).click()
    expect(el(page, elem_id)).to_contain_text(reset_text)
    _fill(page, field, value)
    el(page, button).click()
    expect(el(page, elem_id)).not_to_contain_text(reset_text)
    expect(el(page, elem_id)).not_to_have_text("")
    return el(page, elem_id).inner_text()


def _fill(page, elem_id: str, value: str):
    el(page, elem_id, "textarea").fill(value)


def _refused_outside(text: str):
    assert "outside the model folders" in text and "127.0.0.1" in text and "--host 0.0.0.0" in text, text


def test_paths(ui, page):
    """Identify with a models folder outside (direct, ``..``, a linked folder); add as reference a file
    outside (``..``, a linked file); scan a folder outside (direct, ``..``, a linked folder); scan the
    model folder holding links that lead outside."""
    from playwright.sync_api import expect
    kind, mode, _, work, _ = ui
    models, outside = work / "models", work / "outside"
    _pick(page, "mfp_checkpoint", "a.safetensors")
    for mdir in (str(outside), f"{models}/../outside", str(models / "link_out")):
        summary = _answer(page, "mfp_summary", "mfp_models_dir", mdir, "mfp_identify")
        if mode == "exposed":
            _refused_outside(summary)
            assert f"models folder {mdir} is outside" in summary, summary
        else:
            assert "a.safetensors" in summary and "SD1.x" in summary and "Error" not in summary, summary
            expect(el(page, "mfp_ref_path", "textarea")).to_have_value(f"{mdir}/a.safetensors")

    for i, path in enumerate((f"{models}/../outside/a.safetensors", str(models / "sneaky.safetensors"))):
        _fill(page, "mfp_ref_name", f"Outside {i}")
        status = _answer(page, "mfp_add_status", "mfp_ref_path", path, "mfp_add_ref")
        if mode == "exposed":
            _refused_outside(status)
            assert f"model file {path} is outside" in status, status
        else:
            assert f"Added reference Outside {i}" in status, status
    if mode == "exposed":
        assert not (work / "refs").exists() or not list((work / "refs").iterdir())

    page.locator("button", has_text="Scan a folder").first.click()
    expect(el(page, "mfp_folder", "textarea")).to_have_value(str(models))
    for folder in (str(outside), f"{models}/../outside", str(models / "link_out")):
        status = _answer(page, "mfp_scan_status", "mfp_folder", folder, "mfp_scan")
        if mode == "exposed":
            _refused_outside(status)
            assert status.startswith("Refused") and f"folder {folder} is outside" in status, status
        else:
            assert "Scanned 2 model files" in status, status
            assert "b.safetensors" in el(page, "mfp_table").inner_text()

    # the model folder itself, holding links that lead outside: scanned, the links skipped and named
    status = _answer(page, "mfp_scan_status", "mfp_folder", str(models), "mfp_scan")
    table = el(page, "mfp_table").inner_text()
    if mode == "exposed":
        assert "Scanned 2 model files" in status, status
        assert "skipped link_out: a link leading outside the model folders" in status, status
        assert "skipped sneaky.safetensors: a link leading outside the model folders" in status, status
        assert str(outside) not in status and "sneaky" not in table and "link_out" not in table, (status, table)
    else:
        assert "Scanned 5 model files" in status and "skipped" not in status, status
        assert "link_out/b.safetensors" in table and "sneaky.safetensors" in table, table
    assert "sub/c.safetensors" in table, table


def test_writes(ui, page):
    """Scan and write tags, and add a file inside the model folder as a reference: refused without
    FPCORE_EXPOSED_WRITES=1 on the exposed UI, done on the local one."""
    kind, mode, _, work, _ = ui
    models = work / "models"
    _fill(page, "mfp_ref_name", "Inside A")
    status = _answer(page, "mfp_add_status", "mfp_ref_path", str(models / "a.safetensors"), "mfp_add_ref")
    refs = list((work / "refs").glob("*")) if (work / "refs").exists() else []
    if mode == "exposed":
        assert "adding a reference is refused" in status and "FPCORE_EXPOSED_WRITES=1" in status, status
        assert "--host 0.0.0.0" in status and not refs, status
    else:
        assert "Added reference Inside A" in status and refs, status

    page.locator("button", has_text="Scan a folder").first.click()
    status = _answer(page, "mfp_scan_status", "mfp_folder", str(models), "mfp_scan_tags")
    sidecars = sorted(p.relative_to(models).as_posix() for p in models.rglob("*.json"))
    if mode == "exposed":
        assert status.startswith("Refused") and "writing tag sidecars is refused" in status, status
        assert "FPCORE_EXPOSED_WRITES=1" in status and not sidecars, (status, sidecars)
    else:
        assert "sidecar(s) written" in status, status
        assert {"a.json", "sub/c.json"} <= set(sidecars), sidecars


def test_urls(ui, page, netns, http):
    """127.0.0.1, a private address, and a public address redirecting to the private one: refused on
    the exposed UI (the redirect before any connection to the private address); read on the local
    UI (no setting needed), which also reaches the private listener, so it is listening.
    A public URL is read on both."""
    if http is None:
        pytest.skip(f"no private network namespace for the public and private addresses: {netns[1]}")
    kind, mode, *_ = ui
    port, logs = http
    urls = {"loopback": f"http://127.0.0.1:{port}/x.safetensors",
            "private": f"http://{PRIVATE_IP}/x.safetensors",
            "redirect": f"http://{PUBLIC_IP}:{port}/redirect/x.safetensors",
            "public": f"http://{PUBLIC_IP}:{port}/x.safetensors"}
    for case, url in urls.items():
        private_before, public_before = len(_log(logs, PRIVATE_IP)), len(_log(logs, PUBLIC_IP))
        summary = _answer(page, "mfp_summary", "mfp_url", url, "mfp_identify_url")
        private_seen = _log(logs, PRIVATE_IP)[private_before:]
        public_seen = _log(logs, PUBLIC_IP)[public_before:]
        if mode == "local" or case == "public":
            assert "x.safetensors" in summary and "SD1.x" in summary and "Error" not in summary, (case, summary)
            if case in ("private", "redirect"):
                assert "GET /x.safetensors" in private_seen, (case, private_seen)
            continue
        assert "Error" in summary and "FPCORE_ALLOW_PRIVATE_URLS=1" in summary, (case, summary)
        assert not private_seen, f"{case}: the exposed UI connected to {PRIVATE_IP}: {private_seen}"
        if case == "loopback":
            assert "127.0.0.1 is a loopback address" in summary, summary
        elif case == "private":
            assert f"{PRIVATE_IP} is a private address" in summary, summary
        else:  # the public hop was read, the redirect target refused before connecting
            assert "GET /redirect/x.safetensors" in public_seen, public_seen
            assert f"redirected to http://{PRIVATE_IP}/x.safetensors" in summary, summary
            assert f"{PRIVATE_IP} is a private address" in summary, summary
