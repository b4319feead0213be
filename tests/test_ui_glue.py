"""The UI handlers, the A1111/Forge script against stand-in host modules, and install.py.

No gradio here (the browser tests run the real ones): the script is imported with fake
``gradio`` and ``modules`` in sys.modules, shaped like A1111 v1.10.1 and Forge."""
from __future__ import annotations

import ast
import importlib.util
import json
import shutil
import sys
import threading
import types
from pathlib import Path

import pytest

import testkit
from fpcore import ui

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    d = tmp_path_factory.mktemp("glue_models")
    spec = testkit.checkpoint_spec("sd1", "tiny")
    a = testkit.random_state_dict(spec, 1)
    testkit.write_safetensors(d / "a.safetensors", a, "F16")
    (d / "sub").mkdir()
    testkit.write_safetensors(d / "sub" / "b.safetensors", testkit.finetune(a, 0.30, 11, comps=("unet", "clip_l")), "F16")
    (d / "notes.txt").write_text("not a model")
    return d


# ------------------------------------------------------------------ fpcore.ui without gradio

@pytest.mark.parametrize("module", ["ui/__init__.py", "ui/actions.py", "ui/format.py"])
def test_ui_module_never_imports_gradio(module):
    tree = ast.parse((ROOT / "fpcore" / module).read_text())
    names = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    names |= {(n.module or "").split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert not names & {"gradio", "modules", "launch", "comfy", "folder_paths"}, names


def test_standalone_host_lists_and_resolves(folder):
    h = ui.StandaloneHost(folder)
    assert h.list_checkpoints() == ["a.safetensors", "sub/b.safetensors"]
    assert h.resolve("sub/b.safetensors") == str(folder / "sub" / "b.safetensors")
    assert h.current_checkpoint() is None and not h.has_current
    assert ui.StandaloneHost(folder / "missing").list_checkpoints() == []


def test_identify_named_current_and_format(folder, tmp_path):
    h = ui.StandaloneHost(folder, refs_dir=tmp_path / "refs", cache_dir=tmp_path / "cache")
    rep = ui.identify_named(h, "a.safetensors")
    assert rep["error"] is None and rep["architecture"]["family"] == "sd1"
    md = ui.format_report(rep)
    assert "a.safetensors" in md and "SD1.x" in md and "unknown" in md
    assert rep["sha256"] is None and "sha256: not computed" in md        # fingerprint first: no hash needed
    assert "choose a checkpoint" in ui.identify_named(h, "")["error"]
    assert "no checkpoint is loaded" in ui.identify_current(h)["error"]
    assert ui.format_report(ui.identify_current(h)) == "**Error**: no checkpoint is loaded or selected in the UI"
    bad = ui.identify_named(h, "nope.safetensors")
    assert bad["error"] and ui.format_report(bad).startswith("**Error**")


def test_known_sha256_is_passed_on(folder, tmp_path, monkeypatch):
    """A host's hash reaches api.identify_file (the file is then not hashed again)."""
    seen = {}
    real = ui.api.identify_file

    def spy(path, **kw):
        seen.update(kw, path=path)
        return real(path, **kw)
    monkeypatch.setattr(ui.api, "identify_file", spy)

    class Host(ui.StandaloneHost):
        has_current = True

        def current_checkpoint(self):
            return str(folder / "a.safetensors"), "ab" * 32

        def resolve(self, name, models_dir=None):
            return str(folder / name), "cd" * 32
    h = Host(folder, refs_dir=tmp_path / "r", cache_dir=tmp_path / "c")
    rep = ui.identify_current(h)
    assert seen["sha256"] == "ab" * 32 and rep["sha256"] == "ab" * 32
    ui.identify_named(h, "a.safetensors")
    assert seen["sha256"] == "cd" * 32 and seen["refs_dir"] == tmp_path / "r" and seen["cache_dir"] == tmp_path / "c"


def test_add_reference_then_scan_with_tags(folder, tmp_path):
    work = tmp_path / "models"
    shutil.copytree(folder, work)
    h = ui.StandaloneHost(work, refs_dir=tmp_path / "refs", cache_dir=tmp_path / "cache")
    assert "Give the reference a name" in ui.add_reference(h, str(work / "a.safetensors"), " ")
    assert "Identify a model first" in ui.add_reference(h, "", "X")
    assert ui.add_reference(h, str(work / "a.safetensors"), "Base A") == "Added reference **Base A**."
    assert ui.reference_names(h) == ["Base A"]
    assert ui.add_reference(h, str(work / "notes.txt"), "Junk").startswith("**Error**")

    calls = []
    res = ui.scan(h, str(work), write_tags=True, progress=lambda *a: calls.append(a))
    assert [c[:2] for c in calls][-1] == (2, 2)
    rows = ui.table_rows(res, str(work))
    assert [r[0] for r in rows] == ["a.safetensors", "sub/b.safetensors"]
    assert rows[0][1:4] == ["SD1.x", "Base A", "identical"] and rows[1][2:4] == ["Base A", "derivative"]
    assert float(rows[1][4]) > 0
    assert json.loads((work / "sub" / "b.json").read_text())["base_model"] == "Base A"
    text = ui.scan_summary(res, True)
    assert "Scanned **2** model files" in text and "2 sidecar(s) written" in text


def test_run_with_progress_reports_on_the_callers_thread():
    me = threading.get_ident()
    got = []

    def job(report):
        for i in range(3):
            report(i, 3, f"f{i}")
        return "done"
    assert ui.run_with_progress(job, lambda *a: got.append((threading.get_ident(), a)), poll=0.01) == "done"
    assert got and all(t == me for t, _ in got) and got[-1][1] == (2, 3, "f2")

    def boom(report):
        raise ValueError("engine failed")
    with pytest.raises(ValueError, match="engine failed"):
        ui.run_with_progress(boom, None, poll=0.01)


# ------------------------------------------------------------------ scripts/model_fingerprint.py

class _Info:
    def __init__(self, filename, sha256=None):
        self.filename, self.sha256 = str(filename), sha256
        self.name = Path(filename).name
        self.title = self.name


def _load_script(monkeypatch, folder, *, loaded=None, forge_params=None, selected=None, cached_sha=None):
    """Import the script with stand-ins for gradio and A1111's modules; returns (module, registry)."""
    reg = {}
    cb = types.SimpleNamespace(on_ui_tabs=lambda f: reg.setdefault("ui_tabs", f),
                               on_ui_settings=lambda f: reg.setdefault("ui_settings", f),
                               on_model_loaded=lambda f: reg.setdefault("model_loaded", f))
    infos = {f"{n} [x]": _Info(folder / n) for n in ("a.safetensors", "sub/b.safetensors")}
    md = types.SimpleNamespace(sd_model=loaded)
    if forge_params is not None:
        md.forge_loading_parameters = forge_params
    sd_models = types.SimpleNamespace(model_data=md, checkpoints_list=infos, checkpoint_aliases=dict(infos),
                                      get_closet_checkpoint_match=lambda t: None, model_path=str(folder))

    class Opts:
        def __init__(self):
            self.data, self.labels = {}, {}
            self.sd_model_checkpoint = selected

        def add_option(self, key, info):
            self.labels[key] = info
            self.data.setdefault(key, info.default)
    shared = types.SimpleNamespace(opts=Opts(), cmd_opts=types.SimpleNamespace(ckpt_dir=None),
                                   OptionInfo=lambda default, label, section=None: types.SimpleNamespace(
                                       default=default, label=label, section=section))
    hashes = types.SimpleNamespace(sha256_from_cache=lambda filename, title: cached_sha)
    modules = types.ModuleType("modules")
    for name, m in dict(script_callbacks=cb, sd_models=sd_models, shared=shared, hashes=hashes).items():
        setattr(modules, name, m)
        monkeypatch.setitem(sys.modules, f"modules.{name}", m)
    monkeypatch.setitem(sys.modules, "modules", modules)
    monkeypatch.setitem(sys.modules, "gradio", types.ModuleType("gradio"))
    spec = importlib.util.spec_from_file_location("mfp_script_under_test", ROOT / "scripts" / "model_fingerprint.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod, reg, shared, infos


def test_exactly_one_script():
    assert [p.name for p in (ROOT / "scripts").iterdir() if p.suffix == ".py"] == ["model_fingerprint.py"]


def test_script_registers_tab_settings_and_on_load(monkeypatch, folder):
    mod, reg, shared, _ = _load_script(monkeypatch, folder)
    assert set(reg) == {"ui_tabs", "ui_settings", "model_loaded"}
    reg["ui_settings"]()
    assert set(shared.opts.labels) == {mod.OPT_REFS, mod.OPT_CACHE, mod.OPT_ON_LOAD}
    assert {i.section for i in shared.opts.labels.values()} == {("model_fingerprint", "Model Fingerprint")}
    built = {}
    monkeypatch.setattr(mod.ui, "build_ui", lambda gr, host: built.setdefault("host", host) or "blocks")
    (blocks, title, elem_id), = reg["ui_tabs"]()
    assert (title, elem_id) == ("Identify base model", "model_fingerprint") and built["host"] is mod.HOST


def test_current_checkpoint_loaded_lazy_selected(monkeypatch, folder):
    a, b = folder / "a.safetensors", folder / "sub" / "b.safetensors"
    # A1111 with a model loaded: its CheckpointInfo and the hash A1111 computed
    mod, *_ = _load_script(monkeypatch, folder, loaded=types.SimpleNamespace(sd_checkpoint_info=_Info(a, "11" * 32)),
                           selected="sub/b.safetensors [x]")
    assert mod.HOST.current_checkpoint() == (str(a), "11" * 32)
    # Forge before the first generation: FakeInitialModel has no info; its loading parameters do
    mod, *_ = _load_script(monkeypatch, folder, loaded=object(), forge_params={"checkpoint_info": _Info(b)},
                           selected="a.safetensors [x]", cached_sha="22" * 32)
    assert mod.HOST.current_checkpoint() == (str(b), "22" * 32)
    # nothing loaded: the selected checkpoint
    mod, *_ = _load_script(monkeypatch, folder, selected="sub/b.safetensors [x]")
    assert mod.HOST.current_checkpoint() == (str(b), None)
    # nothing selected either (fresh install, or loading failed): the first, which the host would load
    mod, *_ = _load_script(monkeypatch, folder)
    assert mod.HOST.current_checkpoint() == (str(a), None)
    assert mod.HOST.list_checkpoints() == ["a.safetensors [x]", "sub/b.safetensors [x]"]
    assert mod.HOST.resolve("a.safetensors [x]") == (str(a), None)
    assert mod.HOST.models_dir() == str(folder)
    mod.sd_models.checkpoints_list.clear()
    assert mod.HOST.current_checkpoint() is None


def test_lora_folders_of_the_host(monkeypatch, folder, tmp_path):
    """The tab checks A1111/Forge's LoRA folder (--lora-dir, else models/Lora) against the loaded checkpoint."""
    mod, *_ = _load_script(monkeypatch, folder)
    assert mod.HOST.lora_dirs() == []                 # no --lora-dir and no modules.paths in this stand-in
    mod.shared.cmd_opts.lora_dir = str(tmp_path / "Lora")
    (tmp_path / "Lora").mkdir()
    assert mod.HOST.lora_dirs() == [str(tmp_path / "Lora")]
    assert ui.lora_dirs(mod.HOST) == [str(tmp_path / "Lora")]
    got = ui.loras_for(mod.HOST, {"path": str(folder / "a.safetensors"), "error": None,
                                  "architecture": {"kind": "checkpoint"}})
    assert got["rows"] == [] and got["message"].startswith("No model files in")


def test_identify_on_model_load(monkeypatch, folder, tmp_path, caplog):
    mod, reg, shared, _ = _load_script(monkeypatch, folder)
    reg["ui_settings"]()
    model = types.SimpleNamespace(sd_checkpoint_info=_Info(folder / "a.safetensors"))
    assert reg["model_loaded"](model) is None  # off by default
    shared.opts.data[mod.OPT_ON_LOAD] = True
    shared.opts.data[mod.OPT_REFS] = str(tmp_path / "refs")
    lines = []
    monkeypatch.setattr(mod.log, "info", lambda fmt, *a: lines.append(fmt % a))
    t = reg["model_loaded"](model)
    t.join(60)
    assert lines and lines[0].startswith("a.safetensors: SD1.x:"), lines


# ------------------------------------------------------------------ install.py

def _load_install(monkeypatch, launch=None):
    if launch is None:
        monkeypatch.delitem(sys.modules, "launch", raising=False)
        monkeypatch.setattr(sys, "path", [p for p in sys.path if not Path(p, "launch.py").exists()])
    else:
        monkeypatch.setitem(sys.modules, "launch", launch)
    spec = importlib.util.spec_from_file_location("mfp_install_under_test", ROOT / "install.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_install_without_launch_uses_pip_for_the_missing_only(monkeypatch, tmp_path):
    mod = _load_install(monkeypatch)
    assert mod.launch is None
    req = tmp_path / "requirements.txt"
    req.write_text("# comment\nnumpy>=1.0\nnumpy>=999\nsurely-not-installed-pkg-xyz>=1\n-e .\n")
    monkeypatch.setattr(mod, "REQUIREMENTS", str(req))
    assert mod.requirements(str(req)) == ["numpy>=1.0", "numpy>=999", "surely-not-installed-pkg-xyz>=1"]
    runs = []
    monkeypatch.setattr(mod.subprocess, "run", lambda cmd, **kw: runs.append(cmd) or types.SimpleNamespace(returncode=0))
    for r in mod.requirements(str(req)):
        if not mod.satisfied(r):
            mod.install(r)
    installed = [c[4] for c in runs]
    assert installed == ["surely-not-installed-pkg-xyz>=1"]   # numpy is the host's: never moved, even for ">=999"
    assert runs[0][:4] == [sys.executable, "-m", "pip", "install"]
    assert any(a.startswith("numpy==") for a in runs[0][5:])  # the install holds the host's numpy


def test_install_with_launch_uses_run_pip(monkeypatch, tmp_path):
    import tomllib   # the dependencies are pyproject's (requirements.txt lists none: see its comment)
    assert _load_install(monkeypatch).requirements() == tomllib.loads(
        (ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    req = tmp_path / "requirements.txt"
    req.write_text("numpy>=1.0\nml_dtypes>=0.3\n")
    calls = []
    launch = types.SimpleNamespace(is_installed=lambda name: name != "ml_dtypes",
                                   run_pip=lambda cmd, desc=None: calls.append((cmd, desc)))
    mod = _load_install(monkeypatch, launch)
    assert mod.launch is launch
    monkeypatch.setattr(mod, "REQUIREMENTS", str(req))
    monkeypatch.setattr(mod.subprocess, "run", lambda *a, **k: pytest.fail("pip must go through launch.run_pip"))
    mod.main()
    assert [c[0].split()[1] for c in calls] == ['"ml_dtypes>=0.3"']
    assert "Model Fingerprint" in calls[0][1]
