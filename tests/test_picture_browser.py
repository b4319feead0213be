"""The report's picture as users see it, in Chromium (playwright), asserting on the rendered DOM:

- the standalone UI on gradio 3.41.2 (A1111's) and 4.40.0 (Forge's), each from its venv
  (FPCORE_UI_PYTHON_G3 / _G4, made by .ci/ui_venvs.sh): the picture above the text;
- the HTML scan report: each file's picture on expand;
- the ComfyUI node's DOM widget: web/fingerprint.js loaded as the frontend loads it (an ES
  module importing ../../scripts/app.js), against a stand-in ``app`` that offers the public
  API the extension uses (registerExtension, addDOMWidget). The real frontend is checked
  locally (tests/test_comfy_integration.py needs a ComfyUI checkout).

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


STAND_IN_APP = """// the part of ComfyUI's public frontend API web/fingerprint.js uses
class Node {
  constructor() { this.widgets = []; this.size = [300, 120]; this.el = document.createElement("div");
                  this.el.className = "node"; document.body.appendChild(this.el); }
  addDOMWidget(name, type, element, options) {
    const w = { name, type, element, options, value: options.getValue?.() };
    this.widgets.push(w); this.el.appendChild(element); return w; }
  computeSize() { return [300, 60 + this.widgets.reduce((h, w) => h + (w.options.getMinHeight?.() || 0), 0)]; }
  setSize(s) { this.size = s; this.el.style.width = s[0] + "px"; }
}
const extensions = [];
export const app = {
  graph: { setDirtyCanvas() {} },
  registerExtension(ext) { extensions.push(ext); },
  async makeNode(name) {
    const nodeType = class extends Node {};
    for (const e of extensions) await e.beforeRegisterNodeDef?.(nodeType, { name }, app);
    return new nodeType();
  },
  extensions,
};
window.app = app;
"""


def test_comfy_node_shows_the_picture_in_a_dom_widget(library, tmp_path):
    sync_playwright = _browser_or_skip()
    models, refs = library
    rep = api.identify_file(models / "blend.safetensors", refs_dir=refs, cache_dir=tmp_path / "cache")
    svg = picture.svg(rep, picture.reference_tree(RefDB(refs)), uid="node")
    js = (ROOT / "web" / "fingerprint.js").read_text()
    assert "scripts/widgets.js" not in js and "addDOMWidget" in js and "registerExtension" in js
    site = tmp_path / "site"
    (site / "scripts").mkdir(parents=True)
    (site / "extensions" / "model_fingerprint").mkdir(parents=True)
    (site / "scripts" / "app.js").write_text(STAND_IN_APP)
    shutil.copy(ROOT / "web" / "fingerprint.js", site / "extensions" / "model_fingerprint" / "fingerprint.js")
    (site / "index.html").write_text("<!doctype html><meta charset=utf-8><body style='background:#333'>"
                                     "<script type=module src='extensions/model_fingerprint/fingerprint.js'></script>")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(site))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    httpd.RequestHandlerClass.log_message = lambda *a: None
    t = threading.Thread(target=httpd.serve_forever, daemon=True)
    t.start()
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                page = browser.new_page(viewport={"width": 900, "height": 1100})
                errors = []
                page.on("pageerror", lambda e: errors.append(str(e)))
                page.goto(f"http://127.0.0.1:{httpd.server_port}/index.html")
                page.wait_for_function("window.app && window.app.extensions.length === 1")
                page.evaluate("""async ([svg, text]) => {
                    const node = await window.app.makeNode("ModelFingerprintIdentifyCheckpoint");
                    const other = await window.app.makeNode("SomeoneElsesNode");
                    node.onExecuted({text: [text], picture: [svg]});
                    node.onExecuted({text: [text], picture: [svg]});   // a second run replaces, not adds
                    window.mfpNode = node; window.otherNode = other;
                }""", [svg, api.summary_line(rep)])
                assert not errors, errors
                assert page.evaluate("window.otherNode.onExecuted === undefined")
                widgets = page.evaluate("window.mfpNode.widgets.map(w => [w.name, w.options.serialize])")
                assert widgets == [["fingerprint_picture", False]]
                el = page.locator(".node .mfp-node-picture")
                assert el.count() == 1
                rendered = el.locator("svg.mfp-picture")
                assert rendered.count() == 1
                _check_picture(rendered, "blend.safetensors", "merge")
                _check_bars(rendered, BLOCKS)
                assert "blend" in el.locator(".mfp-node-summary").inner_text() or \
                    "merge" in el.locator(".mfp-node-summary").inner_text().lower()
                assert page.evaluate("window.mfpNode.size[0]") >= 600
                # a report without a picture (an error) leaves only the text
                page.evaluate("window.mfpNode.onExecuted({text: ['error: truncated file'], picture: ['']})")
                assert el.locator("svg").count() == 0
                assert el.locator(".mfp-node-summary").inner_text() == "error: truncated file"
            finally:
                browser.close()
    finally:
        httpd.shutdown()
