"""The report's picture as users see it, in Chromium (playwright), asserting on the rendered DOM:

- the standalone UI on gradio 3.41.2 (A1111's) and 4.40.0 (Forge's), each from its venv
  (FPCORE_UI_PYTHON_G3 / _G4, made by .ci/ui_venvs.sh): the picture above the text;
- the HTML scan report: each file's picture on expand;
- the ComfyUI node's DOM widget: web/fingerprint.js in ComfyUI's real frontend
  (comfyui-frontend-package, the registry package ComfyUI installs), served with the API a
  fresh ComfyUI answers at start-up; skipped when that package is not installed.

The references (Base; Alpha and Beta, fine-tunes of Base) and the files (a fine-tune of
Alpha, a block-weighted merge of Alpha and Beta, an unrelated model) are made here.
FPCORE_UI_SCREENSHOT_DIR keeps the screenshots (docs/ holds them for the README).
"""
from __future__ import annotations

import functools
import http.server
import os
import shutil
import threading
from pathlib import Path

import pytest

import testkit
from fpcore import api, picture
from fpcore.refs.library import RefDB

from test_ui_browser import CHROMIUM, CHROMIUM_ARGS, _pick, _shot, models, server  # noqa: F401  (fixtures)

ROOT = Path(__file__).resolve().parent.parent
BLOCKS = {"input": [0.8, 0.2], "middle": [0.5, 0.5], "output": [0.1, 0.9]}


def _browser_or_skip():
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium fonts-dejavu-core)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("playwright is not importable (pip install playwright)")
    return sync_playwright


@pytest.fixture(scope="module")
def library(tmp_path_factory):
    """(models dir, refs dir): references Base <- Alpha, Base <- Beta; files tuned / blend / stranger."""
    d = tmp_path_factory.mktemp("picture")
    spec = testkit.checkpoint_spec("sd1", "tiny")
    base = testkit.random_state_dict(spec, 1)
    alpha = testkit.finetune(base, 0.30, 11, comps=("unet", "clip_l"))
    beta = testkit.finetune(base, 0.30, 12, comps=("unet", "clip_l"))
    refs, src, models = d / "refs", d / "ref_files", d / "models"
    src.mkdir()
    models.mkdir()
    for name, sd, parent in (("Base", base, None), ("Alpha", alpha, "Base"), ("Beta", beta, "Base")):
        testkit.write_safetensors(src / f"{name}.safetensors", sd, "F16")
        api.add_reference(src / f"{name}.safetensors", name, parent=parent, refs_dir=refs)
    testkit.write_safetensors(models / "tuned.safetensors", testkit.finetune(alpha, 0.1, 5, comps=("unet",)), "F16")
    testkit.write_safetensors(models / "blend.safetensors", testkit.merge([(alpha, 0.5), (beta, 0.5)], BLOCKS), "F16")
    testkit.write_safetensors(models / "stranger.safetensors", testkit.random_state_dict(spec, 99), "F16")
    return models, refs


def _check_picture(svg_locator, file_name: str, relation: str):
    """What every rendered picture must show: the tree's nodes, the file placed, the legend, the strip."""
    svg_locator.wait_for()
    box = svg_locator.bounding_box()
    assert box and box["width"] > 300 and box["height"] > 150, box
    names = svg_locator.locator("g.mfp-node").evaluate_all("els => els.map(e => e.dataset.name)")
    assert {"Base", "Alpha", "Beta", file_name} <= set(names), names
    f = svg_locator.locator("g.mfp-file")
    assert f.count() == 1 and f.get_attribute("data-relation") == relation
    assert f.bounding_box()["width"] > 0
    legend = svg_locator.locator("g.mfp-legend-item").evaluate_all("els => els.map(e => e.dataset.relation || '')")
    assert set(picture.RELATIONS) <= set(legend)
    assert svg_locator.locator("g.mfp-legend").bounding_box()["height"] > 20
    comps = svg_locator.locator("g.mfp-comp").evaluate_all("els => els.map(e => e.dataset.component)")
    assert comps == ["unet", "clip_l", "vae"], comps


def _check_bars(svg_locator, weights: dict):
    """Each bar's rendered segments: as wide as their weights say, together as wide as the bar."""
    segs = svg_locator.locator("rect.mfp-seg").evaluate_all(
        "els => els.map(e => ({g: e.dataset.group, ref: e.dataset.ref, w: parseFloat(e.dataset.weight), "
        "px: e.getBoundingClientRect().width}))")
    groups = {}
    for s in segs:
        groups.setdefault(s["g"], []).append(s)
    assert set(groups) == {"whole model", "input", "middle", "output"}, set(groups)
    full = None
    for g, ss in groups.items():
        total = sum(s["px"] for s in ss)
        full = full or total
        assert total == pytest.approx(full, rel=0.01)
        for s in ss:
            assert s["px"] / total == pytest.approx(s["w"], abs=0.01), (g, s)
    for g, (wa, wb) in BLOCKS.items():           # the engine's recipe, drawn
        got = {s["ref"]: s["px"] / sum(x["px"] for x in groups[g]) for s in groups[g]}
        assert got.get("Alpha", 0) == pytest.approx(wa, abs=0.07) and got.get("Beta", 0) == pytest.approx(wb, abs=0.07)


def test_ui_shows_the_picture_above_the_text(server, library):
    from playwright.sync_api import expect, sync_playwright
    kind, url, models_dir, refs_dir, _ = server
    models, refs = library
    for f in models.iterdir():
        shutil.copy(f, models_dir / f.name)
    shutil.copytree(refs, refs_dir, dirs_exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1400})
            page.set_default_timeout(60_000)
            expect.set_options(timeout=60_000)
            page.goto(url, wait_until="domcontentloaded")
            page.wait_for_selector("#mfp_identify")
            _pick(page, "mfp_checkpoint", "blend.safetensors", refresh="mfp_refresh")
            page.locator("#mfp_identify").first.click()
            svg = page.locator("#mfp_picture svg.mfp-picture").first
            expect(svg).to_be_visible()
            expect(page.locator("#mfp_summary").first).to_contain_text("blend.safetensors")
            _check_picture(svg, "blend.safetensors", "merge")
            _check_bars(svg, BLOCKS)
            # above the text
            assert svg.bounding_box()["y"] + svg.bounding_box()["height"] <= \
                page.locator("#mfp_summary").first.bounding_box()["y"] + 1
            _shot(page, f"picture-ui-{kind}.png")

            _pick(page, "mfp_checkpoint", "tuned.safetensors")
            page.locator("#mfp_identify").first.click()
            expect(page.locator("#mfp_picture g.mfp-file[data-name='tuned.safetensors']")).to_have_count(1)
            svg = page.locator("#mfp_picture svg.mfp-picture").first
            _check_picture(svg, "tuned.safetensors", "derivative")
            edge = svg.locator("polyline[data-kind='derivative']")
            assert edge.get_attribute("data-from") == "Alpha" and edge.bounding_box()["width"] > 0
            assert svg.locator("rect.mfp-seg").count() == 0
        finally:
            browser.close()


def test_html_report_shows_each_picture_on_expand(library, tmp_path):
    sync_playwright = _browser_or_skip()
    from fpcore.scan import html as report_html
    from fpcore import scan as _scan
    models, refs = library
    db = RefDB(refs)
    result = _scan.scan_folder(models, refs_dir=refs, cache_dir=tmp_path / "cache")
    page_file = tmp_path / "report.html"
    page_file.write_text(report_html.render(result, db), encoding="utf-8")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            page.goto(page_file.as_uri())
            details = page.locator("details.mfp-pic")
            assert details.count() == 3
            blend = page.locator("details.mfp-pic[data-path='blend.safetensors']")
            svg = blend.locator("svg.mfp-picture")
            assert not svg.is_visible()                       # folded until the user expands it
            blend.locator("summary").click()
            assert svg.is_visible()
            _check_picture(svg, "blend.safetensors", "merge")
            _check_bars(svg, BLOCKS)
            stranger = page.locator("details.mfp-pic[data-path='stranger.safetensors']")
            stranger.locator("summary").click()
            s2 = stranger.locator("svg.mfp-picture")
            assert s2.locator("g.mfp-file").get_attribute("data-relation") == "unknown"
            assert s2.locator("polyline[data-kind='unrelated']").count() == 1
            assert "why:" in s2.locator("g.mfp-file").text_content()
            # pictures on one page keep their pattern ids apart
            ids = page.locator("pattern").evaluate_all("els => els.map(e => e.id)")
            assert ids and len(ids) == len(set(ids))
            blend.scroll_into_view_if_needed()
            _shot_element(blend, "picture-report.png")
        finally:
            browser.close()


def _shot_element(locator, name):
    d = os.environ.get("FPCORE_UI_SCREENSHOT_DIR")
    if d:
        os.makedirs(d, exist_ok=True)
        locator.screenshot(path=os.path.join(d, name))


# -- the ComfyUI node in the real frontend ----------------------------------------------------------
#: a version of the frontend as ComfyUI installs it (comfyui-frontend-package; 1.32.9 and 1.58.1 checked)
FRONTEND_PACKAGE = "comfyui-frontend-package"


def _frontend_or_skip() -> Path:
    try:
        import comfyui_frontend_package
    except ImportError:
        pytest.skip(f"the ComfyUI frontend is not installed (pip install {FRONTEND_PACKAGE})")
    return Path(comfyui_frontend_package.__file__).parent / "static"


def _node_info(name: str, cls, display: str) -> dict:
    """A node's /object_info entry, with the fields ComfyUI's server.py (node_info) gives it."""
    inputs = cls.INPUT_TYPES()
    return {"input": inputs, "input_order": {k: list(v) for k, v in inputs.items()}, "output": list(cls.RETURN_TYPES),
            "output_is_list": [False] * len(cls.RETURN_TYPES), "output_name": list(cls.RETURN_NAMES),
            "name": name, "display_name": display, "description": cls.DESCRIPTION,
            "python_module": "custom_nodes.model_fingerprint", "category": cls.CATEGORY,
            "output_node": bool(getattr(cls, "OUTPUT_NODE", False))}


def _pack_object_info(monkeypatch, checkpoints: list[str]) -> dict:
    """/object_info of this pack's nodes, from its node classes (the pack loaded as ComfyUI loads it,
    with a stand-in folder_paths listing ``checkpoints``), plus another pack's node."""
    import importlib.util
    import sys
    import types
    fp = types.ModuleType("folder_paths")
    fp.get_filename_list = lambda folder: list(checkpoints) if folder == "checkpoints" else []
    monkeypatch.setitem(sys.modules, "folder_paths", fp)
    name = "custom_nodes_model_fingerprint_frontend_test"
    spec = importlib.util.spec_from_file_location(name, ROOT / "__init__.py", submodule_search_locations=[str(ROOT)])
    pack = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, name, pack)
    spec.loader.exec_module(pack)
    info = {n: _node_info(n, c, pack.NODE_DISPLAY_NAME_MAPPINGS[n]) for n, c in pack.NODE_CLASS_MAPPINGS.items()}
    other = type("Other", (), {"INPUT_TYPES": classmethod(lambda c: {"required": {"text": ("STRING", {})}}),
                               "RETURN_TYPES": ("STRING",), "RETURN_NAMES": ("text",), "DESCRIPTION": "",
                               "CATEGORY": "utils", "OUTPUT_NODE": True})
    info["SomeoneElsesNode"] = _node_info("SomeoneElsesNode", other, "Someone else's node")
    for k in [k for k in sys.modules if k.startswith(name + ".")]:
        monkeypatch.delitem(sys.modules, k)
    return info


class _ComfyBackend(http.server.SimpleHTTPRequestHandler):
    """What the frontend asks ComfyUI's server for at start-up, answered as server.py answers a
    fresh single-user install (no websocket: the tests deliver "executed" through the frontend's
    own api object, the way its websocket handler does); the frontend's files; this pack's web/
    under /extensions/model_fingerprint/ (ComfyUI serves a pack's WEB_DIRECTORY there)."""
    api: dict = {}
    static: Path = Path()

    def log_message(self, *a):
        pass

    def _send(self, body: bytes, ctype: str, code: int = 200):
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        import json
        p = self.path.split("?")[0]
        if p in self.api:
            return self._send(json.dumps(self.api[p]).encode(), "application/json")
        if p.startswith("/api/settings/"):
            return self._send(b"null", "application/json")
        if p.startswith("/api/") or p == "/ws":
            return self._send(b"", "text/plain", 404)
        if p.startswith("/extensions/model_fingerprint/"):
            f = ROOT / "web" / p[len("/extensions/model_fingerprint/"):]
            if f.is_file():
                return self._send(f.read_bytes(), "text/javascript")
        self.directory = str(self.static)
        return super().do_GET()

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        return self._send(b"{}", "application/json")


def test_comfy_node_shows_the_picture_in_the_real_frontend(library, tmp_path, monkeypatch):
    """web/fingerprint.js in ComfyUI's own frontend (comfyui-frontend-package): the node made by
    the frontend from the pack's /object_info, the report delivered as the server's "executed"
    message, the picture drawn in the node's DOM widget, and the widget kept out of the prompt."""
    import glob
    import json
    sync_playwright = _browser_or_skip()
    static = _frontend_or_skip()
    models, refs = library
    rep = api.identify_file(models / "blend.safetensors", refs_dir=refs, cache_dir=tmp_path / "cache")
    svg = picture.svg(rep, picture.reference_tree(RefDB(refs)), uid="node")
    core = ["/" + os.path.relpath(f, static) for f in glob.glob(str(static / "extensions" / "**" / "*.js"),
                                                                  recursive=True)]
    handler = type("Backend", (_ComfyBackend,), {"static": static, "api": {
        "/api/users": {"storage": "server", "migrated": True},
        "/api/system_stats": {"system": {"os": "posix", "ram_total": 2 ** 34, "ram_free": 2 ** 33,
                                         "comfyui_version": "0.3.75", "python_version": "3", "pytorch_version": "",
                                         "embedded_python": False, "argv": ["main.py", "--cpu"]}, "devices": []},
        "/api/settings": {"Comfy.TutorialCompleted": True, "Comfy.Workflow.ShowMissingNodesWarning": False},
        "/api/extensions": core + ["/extensions/model_fingerprint/fingerprint.js"],
        "/api/object_info": _pack_object_info(monkeypatch, ["blend.safetensors"]),
        "/api/embeddings": [], "/api/features": {}, "/api/i18n": {}, "/api/experiment/models": [],
        "/api/workflow_templates": {}, "/api/global_subgraphs": {}, "/api/userdata": [], "/api/v2/userdata": [],
        "/api/queue": {"queue_running": [], "queue_pending": []}, "/api/history": {},
        "/api/prompt": {"exec_info": {"queue_remaining": 0}}}})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    t = threading.Thread(target=httpd.serve_forever, daemon=True)
    t.start()
    text = api.summary_line(rep)
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                page = browser.new_page(viewport={"width": 1400, "height": 1100})
                errors = []
                page.on("pageerror", lambda e: errors.append(str(e)))
                page.goto(f"http://127.0.0.1:{httpd.server_port}/")
                page.wait_for_function("!!window.LiteGraph?.registered_node_types?.ModelFingerprintIdentifyCheckpoint"
                                       " && !!window.comfyAPI?.app?.app?.graph", timeout=90_000)
                names = page.evaluate("window.comfyAPI.app.app.extensions.map(e => e.name)")
                assert "ModelFingerprint.Picture" in names and "Comfy.NodeBadge" in names, names
                ids = page.evaluate("""() => {
                    const app = window.comfyAPI.app.app;
                    app.graph.clear();
                    const node = window.LiteGraph.createNode("ModelFingerprintIdentifyCheckpoint");
                    const other = window.LiteGraph.createNode("SomeoneElsesNode");
                    node.pos = [40, 80]; other.pos = [40, 700];
                    app.graph.add(node); app.graph.add(other);
                    return [String(node.id), String(other.id)];
                }""")
                executed = """([id, text, svg]) => window.comfyAPI.api.api.dispatchCustomEvent("executed",
                    {node: id, display_node: id, output: {text: [text], picture: [svg]}, prompt_id: "p1"})"""
                page.evaluate(executed, [ids[0], text, svg])
                page.evaluate(executed, [ids[0], text, svg])             # a second run replaces, not adds
                page.evaluate(executed, [ids[1], "other", svg])          # another pack's node: left alone
                widgets = page.evaluate("""(ids) => ids.map(id => window.comfyAPI.app.app.graph.getNodeById(Number(id))
                                              .widgets.map(w => w.name))""", ids)
                assert widgets == [["ckpt_name", "fingerprint_picture"], ["text"]], widgets
                el = page.locator(".mfp-node-picture")
                assert el.count() == 1
                rendered = el.locator("svg.mfp-picture")
                assert rendered.count() == 1
                _check_picture(rendered, "blend.safetensors", "merge")
                _check_bars(rendered, BLOCKS)
                assert el.locator(".mfp-node-summary").inner_text() == text
                assert page.evaluate("(id) => window.comfyAPI.app.app.graph.getNodeById(Number(id)).size[0]", ids[0]) >= 600
                # the picture is not part of the prompt sent to the server, nor of the saved workflow
                prompt = page.evaluate("""async (id) => {
                    const p = await window.comfyAPI.app.app.graphToPrompt();
                    return [p.output[id].inputs, p.workflow.nodes.find(n => String(n.id) === id).widgets_values];
                }""", ids[0])
                assert prompt == [{"ckpt_name": "blend.safetensors"}, ["blend.safetensors"]], prompt
                el.scroll_into_view_if_needed()
                _shot_element(el, "picture-comfy-node.png")
                # a report without a picture (an error) leaves only the text
                page.evaluate(executed, [ids[0], "error: truncated file", ""])
                assert el.locator("svg").count() == 0
                assert el.locator(".mfp-node-summary").inner_text() == "error: truncated file"
                assert not errors, errors
            finally:
                browser.close()
    finally:
        httpd.shutdown()
