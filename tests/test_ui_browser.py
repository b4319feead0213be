"""The UI in a real browser: ``python -m fpcore ui`` on gradio 3.41.2 (A1111's) and 4.40.0
(Forge's), each from its own venv, driven by Debian's chromium through playwright.

Needs: ``/usr/bin/chromium``, ``playwright`` importable here, and the venv interpreters in
FPCORE_UI_PYTHON_G3 / FPCORE_UI_PYTHON_G4 (made by ``.ci/ui_venvs.sh``, which .ci/run calls).
Without them the tests skip and say why; when an interpreter is named but something is
missing, they fail (CI promised it). The server runs this tree's fpcore (PYTHONPATH).
Set FPCORE_UI_SCREENSHOT_DIR to keep the screenshots (docs/ holds one for the README).
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

import testkit

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--headless", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
GRADIOS = {"g3": ("FPCORE_UI_PYTHON_G3", "3.41.2"), "g4": ("FPCORE_UI_PYTHON_G4", "4.40.0")}


def _venv_python(kind: str) -> str:
    env, version = GRADIOS[kind]
    py = os.environ.get(env)
    if not py:
        pytest.skip(f"{env} is not set: no venv with gradio {version} (make one with .ci/ui_venvs.sh)")
    if not os.access(py, os.X_OK):
        pytest.fail(f"{env}={py} is not an executable python")
    if not os.path.exists(CHROMIUM):
        pytest.fail(f"{env} is set but {CHROMIUM} is missing (apt-get install chromium fonts-dejavu-core)")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        pytest.fail(f"{env} is set but playwright is not importable here (pip install playwright)")
    got = subprocess.run([py, "-c", "import gradio; print(gradio.__version__)"], capture_output=True, text=True,
                         timeout=120)
    assert got.stdout.strip() == version, f"{py}: gradio {got.stdout.strip() or got.stderr[-500:]}, want {version}"
    return py


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """a.safetensors; a duplicate of it; sub/b.safetensors, a fine-tune of a (SD1, tiny widths)."""
    d = tmp_path_factory.mktemp("ui_models")
    spec = testkit.checkpoint_spec("sd1", "tiny")
    a = testkit.random_state_dict(spec, 1)
    testkit.write_safetensors(d / "a.safetensors", a, "F16")
    (d / "sub").mkdir()
    testkit.write_safetensors(d / "sub" / "b.safetensors", testkit.finetune(a, 0.30, 11, comps=("unet", "clip_l")), "F16")
    shutil.copy(d / "a.safetensors", d / "a_copy.safetensors")
    return d


@pytest.fixture(params=sorted(GRADIOS))
def server(request, tmp_path, models):
    """``python -m fpcore ui`` from the gradio venv, on a free port; yields (url, models dir, refs dir)."""
    py = _venv_python(request.param)
    work = tmp_path / "models"
    shutil.copytree(models, work)
    port = _free_port()
    env = dict(os.environ, PYTHONPATH=str(ROOT), FPCORE_REFS=str(tmp_path / "refs"),
               FPCORE_CACHE=str(tmp_path / "cache"), GRADIO_ANALYTICS_ENABLED="False",
               NO_PROXY="127.0.0.1,localhost", no_proxy="127.0.0.1,localhost")
    log = open(tmp_path / "server.log", "w+")
    proc = subprocess.Popen([py, "-m", "fpcore", "ui", "--port", str(port), "--models-dir", str(work)],
                            cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    t0 = time.monotonic()
    try:
        while True:
            if proc.poll() is not None:
                log.seek(0)
                pytest.fail(f"the UI exited with {proc.returncode}:\n{log.read()[-3000:]}")
            try:
                with urllib.request.urlopen(url, timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() - t0 > 90:
                log.seek(0)
                pytest.fail(f"the UI did not answer on {url} within 90 s:\n{log.read()[-3000:]}")
            time.sleep(0.3)
        yield request.param, url, work, tmp_path / "refs", time.monotonic() - t0
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.seek(0)
        tail = log.read()[-2000:]
        log.close()
        if "Traceback" in tail:
            sys.stderr.write(f"server log ({request.param}):\n{tail}\n")


#: seconds one attempt at choosing a dropdown option waits for the option before the list is
#: closed and opened again (choices refreshed while the list is open are not always re-rendered)
PICK_ATTEMPT_S = 5
#: attempts before _pick gives up: 12 x 5 s, the minute the other browser waits allow
PICK_ATTEMPTS = 12


def _pick(page, elem_id: str, option: str, refresh: str | None = None):
    """Choose an option in a gradio dropdown (same DOM idea in 3.41 and 4.40: input + ul.options).

    With ``refresh`` (a button's elem_id), the list is refreshed first, and again on each retry:
    the click that refreshes it can land before the page is wired, and a list opened before the
    new choices arrive may keep showing the old ones."""
    from playwright.sync_api import TimeoutError as PwTimeout
    for attempt in range(PICK_ATTEMPTS):
        if refresh:
            page.locator(f"#{refresh}").first.click()
            page.wait_for_timeout(300 if attempt == 0 else 1000)
        page.locator(f"#{elem_id} input").first.click()
        try:
            page.locator("ul.options li", has_text=option).first.click(timeout=PICK_ATTEMPT_S * 1000)
            return
        except PwTimeout:
            page.keyboard.press("Escape")
            page.locator("body").click(position={"x": 2, "y": 2})
    raise AssertionError(f"option {option!r} never appeared in #{elem_id}'s list")


def _shot(page, name: str):
    d = os.environ.get("FPCORE_UI_SCREENSHOT_DIR")
    if d:
        os.makedirs(d, exist_ok=True)
        page.screenshot(path=os.path.join(d, name), full_page=True)


def test_identify_reference_scan_and_tags(server):
    from playwright.sync_api import expect, sync_playwright
    kind, url, models_dir, refs_dir, startup = server
    timings = {"startup": round(startup, 1)}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            page.set_default_timeout(60_000)
            expect.set_options(timeout=60_000)

            def el(elem_id: str, inner: str = ""):  # gradio 3 repeats a Markdown's elem_id inside it
                return page.locator(f"#{elem_id} {inner}".strip()).first
            page.goto(url, wait_until="domcontentloaded")
            page.wait_for_selector("#mfp_identify")

            # identify one checkpoint chosen in the dropdown
            t = time.monotonic()
            _pick(page, "mfp_checkpoint", "a_copy.safetensors")
            el("mfp_identify").click()
            summary = el("mfp_summary")
            expect(summary).to_contain_text("a_copy.safetensors")
            expect(summary).to_contain_text("SD1.x")
            expect(summary).to_contain_text("unknown")  # nothing registered yet
            expect(el("mfp_ref_path", "textarea")).to_have_value(str(models_dir / "a_copy.safetensors"))
            timings["identify"] = round(time.monotonic() - t, 1)

            # add it as a reference; the parent dropdown learns the new name
            el("mfp_ref_name", "textarea").fill("Base A")
            el("mfp_add_ref").click()
            expect(el("mfp_add_status")).to_contain_text("Added reference Base A")
            assert list(refs_dir.iterdir()), "no reference file written"
            _shot(page, f"ui-identify-{kind}.png")

            # its SHA-256 on demand (the shown file's path is the input: gradio 4 refused a report as one)
            el("mfp_compute_hash").click()
            expect(summary).to_contain_text("sha256:", timeout=120_000)
            expect(summary).not_to_contain_text("not computed")

            # which LoRAs of the models folder fit it (there are none here: it says so)
            page.get_by_text("Which LoRAs fit this checkpoint").first.click()
            el("mfp_loras").click()
            expect(el("mfp_lora_status")).to_contain_text("No LoRA among the files of")

            # scan the folder and write the tags
            t = time.monotonic()
            page.locator("button", has_text="Scan a folder").first.click()
            expect(el("mfp_folder", "textarea")).to_have_value(str(models_dir))
            el("mfp_scan_tags").click()
            table = el("mfp_table")
            expect(table).to_contain_text("sub/b.safetensors", timeout=120_000)
            expect(el("mfp_scan_status")).to_contain_text("Scanned 3 model files")
            expect(el("mfp_scan_status")).to_contain_text("sidecar(s) written")
            text = table.inner_text()
            for col in ("path", "architecture", "base", "relation", "confidence", "claims", "a.safetensors",
                        "Base A", "identical", "derivative"):
                assert col in text, f"{col!r} not in the table:\n{text}"
            timings["scan"] = round(time.monotonic() - t, 1)
            _shot(page, f"ui-scan-{kind}.png")
        finally:
            browser.close()

    for name in ("a.json", "a_copy.json", "sub/b.json"):
        sc = models_dir / name
        assert sc.exists(), f"tag sidecar {sc} not written"
        data = json.loads(sc.read_text())
        assert data["base_model"] == "Base A", data
        assert data["sd_version_str"] == "SdVersion.SD1", data
    assert json.loads((models_dir / "sub/b.json").read_text())["relation"] == "derivative"
    sys.stderr.write(f"gradio {GRADIOS[kind][1]} timings (s): {timings}\n")
