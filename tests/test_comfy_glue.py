"""The ComfyUI glue without ComfyUI: the pack root imported the way ComfyUI imports it
(a module name made up from a path), with a fake ``folder_paths`` and torch-free fake
MODEL / CLIP / VAE objects; and fpcore.memsource on numpy arrays (and torch tensors
where torch is installed)."""
from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import types
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest

import testkit
from fpcore import api
from fpcore.errors import BadFileError
from fpcore.fingerprint import fingerprint_source
from fpcore.identify import identify_tensors
from fpcore.sources.keymaps import remap
from fpcore.sources.memory import MemorySource, dtype_name
from fpcore.sources.safetensors import SafetensorsFile

ROOT = Path(__file__).resolve().parent.parent
PACK = "ComfyUI_custom_nodes_model_fingerprint_under_test"


def load_pack(name: str = PACK):
    """Import the project root as ComfyUI does: spec from <root>/__init__.py under ``name``."""
    for k in [k for k in sys.modules if k == name or k.startswith(name + ".")]:
        del sys.modules[k]
    spec = importlib.util.spec_from_file_location(name, ROOT / "__init__.py", submodule_search_locations=[str(ROOT)])
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture
def comfy(tmp_path, monkeypatch):
    """A fake ComfyUI: folder_paths with a checkpoints folder and a user directory."""
    ckpts = tmp_path / "models" / "checkpoints"
    ckpts.mkdir(parents=True)
    user = tmp_path / "user"
    fp = types.ModuleType("folder_paths")
    fp.get_filename_list = lambda folder: sorted(p.name for p in ckpts.iterdir()) if folder == "checkpoints" else []
    fp.get_full_path = lambda folder, name: str(ckpts / name) if folder == "checkpoints" and (ckpts / name).is_file() else None
    fp.get_user_directory = lambda: str(user)
    monkeypatch.setitem(sys.modules, "folder_paths", fp)
    pack = load_pack()
    yield types.SimpleNamespace(pack=pack, nodes=sys.modules[PACK + ".nodes"], ckpts=ckpts, user=user)
    for k in [k for k in sys.modules if k.startswith(PACK)]:
        del sys.modules[k]


@pytest.fixture(scope="module")
def base_sd():
    return testkit.random_state_dict(testkit.checkpoint_spec("sd1", "tiny"), 1)


def _as(sd: dict, np_type) -> dict:
    return {k: (v.astype(np_type) if v.dtype.kind == "f" else v) for k, v in sd.items()}


# -- fakes of ComfyUI's loaded objects ------------------------------------------------------------

class FakeModule:
    def __init__(self, state):
        self._state = state

    def state_dict(self):
        return dict(self._state)


class FakePatcher:
    """ModelPatcher: .model, .patches (LoRA/merge), .backup (originals of weights patched in place)."""

    def __init__(self, state, patches=None, backup=None, init=None):
        self.model = FakeModule(state)
        self.patches = patches or {}
        self.backup = backup or {}
        if init is not None:
            self.cached_patcher_init = init


def comfy_objects(sd: dict, np_type=np.float32):
    """ComfyUI's in-memory layouts of an SD1 checkpoint: MODEL, CLIP, VAE."""
    sd = _as(sd, np_type)
    unet = {"diffusion_model." + k[len("model.diffusion_model."):]: v for k, v in sd.items()
            if k.startswith("model.diffusion_model.")}
    unet["model_sampling.sigmas"] = np.linspace(0.03, 14.6, 1000, dtype=np.float32)
    clip = {"clip_l.transformer.text_model." + k[len("cond_stage_model.transformer.text_model."):]: v
            for k, v in sd.items() if k.startswith("cond_stage_model.transformer.text_model.")}
    clip["clip_l.logit_scale"] = np.array(4.6, np.float32)
    vae = {k[len("first_stage_model."):]: v for k, v in sd.items() if k.startswith("first_stage_model.")}
    model = FakePatcher(unet)
    clip_obj = types.SimpleNamespace(cond_stage_model=FakeModule(clip), patcher=FakePatcher(clip))
    vae_obj = types.SimpleNamespace(first_stage_model=FakeModule(vae), patcher=FakePatcher(vae))
    return model, clip_obj, vae_obj


@pytest.fixture
def comfy_defaults(monkeypatch):
    """No FPCORE_REFS / FPCORE_CACHE: the nodes use ComfyUI's user directory."""
    monkeypatch.delenv("FPCORE_REFS", raising=False)
    monkeypatch.delenv("FPCORE_CACHE", raising=False)


@pytest.fixture
def registered(comfy, comfy_defaults, base_sd):
    """Base.safetensors in the checkpoints folder, registered as reference "Base" in the
    default reference dir under ComfyUI's user directory (FPCORE_REFS unset)."""
    path = comfy.ckpts / "Base.safetensors"
    testkit.write_safetensors(path, base_sd, "F16")
    api.add_reference(path, "Base", refs_dir=comfy.user / "model_fingerprint" / "refs")
    return path


# -- the pack -------------------------------------------------------------------------------------------

def test_pack_imports_under_a_path_made_name(comfy):
    pack = comfy.pack
    assert set(pack.NODE_CLASS_MAPPINGS) == {"ModelFingerprintIdentifyCheckpoint", "ModelFingerprintIdentifyLoadedModel",
                                             "ModelFingerprintLoraFit"}
    assert pack.NODE_DISPLAY_NAME_MAPPINGS["ModelFingerprintIdentifyCheckpoint"] == "Identify Checkpoint"
    assert pack.NODE_DISPLAY_NAME_MAPPINGS["ModelFingerprintIdentifyLoadedModel"] == "Identify Loaded Model"
    assert pack.NODE_DISPLAY_NAME_MAPPINGS["ModelFingerprintLoraFit"] == "LoRA Fit Check"
    assert pack.WEB_DIRECTORY == "./web"
    assert (ROOT / "web" / "fingerprint.js").is_file()
    # the engine came along inside the pack, not as the top-level fpcore
    assert sys.modules[PACK + ".fpcore.api"] is not None
    for cls in pack.NODE_CLASS_MAPPINGS.values():
        assert cls.CATEGORY == "Model Fingerprint"
        assert cls.OUTPUT_NODE is True
        if cls.__name__ != "LoraFit":    # status, reason, report_json (tests/test_claims_hosts.py)
            assert cls.RETURN_TYPES == ("STRING", "STRING", "IMAGE")   # IMAGE: the report's picture
        assert callable(getattr(cls, cls.FUNCTION))


def test_pack_imports_outside_comfyui_without_a_parent_package(monkeypatch):
    """Run as a plain script (no package, no folder_paths): empty mappings, no error."""
    monkeypatch.delitem(sys.modules, "folder_paths", raising=False)
    import runpy
    ns = runpy.run_path(str(ROOT / "__init__.py"), run_name="not_a_package")
    assert ns["NODE_CLASS_MAPPINGS"] == {} and ns["WEB_DIRECTORY"] == "./web"


def test_importing_the_pack_does_not_need_comfyui(monkeypatch):
    monkeypatch.delitem(sys.modules, "folder_paths", raising=False)
    pack = load_pack(PACK + "_nofp")
    assert len(pack.NODE_CLASS_MAPPINGS) == 3     # folder_paths is only imported when a node runs
    assert "folder_paths" not in sys.modules


def test_checkpoint_input_lists_the_checkpoints_folder(comfy, registered):
    node = comfy.pack.NODE_CLASS_MAPPINGS["ModelFingerprintIdentifyCheckpoint"]
    assert node.INPUT_TYPES() == {"required": {"ckpt_name": (["Base.safetensors"],)}}
    lm = comfy.pack.NODE_CLASS_MAPPINGS["ModelFingerprintIdentifyLoadedModel"].INPUT_TYPES()
    assert lm == {"required": {"model": ("MODEL",)}, "optional": {"clip": ("CLIP",), "vae": ("VAE",)}}


def test_identify_checkpoint_uses_the_comfy_user_dir(comfy, registered, base_sd):
    import os
    testkit.write_safetensors(comfy.ckpts / "tuned.safetensors", testkit.finetune(base_sd, 0.3, 7), "F16")
    node = comfy.pack.NODE_CLASS_MAPPINGS["ModelFingerprintIdentifyCheckpoint"]()
    out = node.identify("tuned.safetensors")
    base, report_json, image = out["result"]
    # the picture: an SVG for the node's DOM widget; the IMAGE output where torch is installed
    assert 'data-name="tuned.safetensors"' in out["ui"]["picture"][0] and 'data-name="Base"' in out["ui"]["picture"][0]
    try:
        import torch  # noqa: F401
    except ImportError:
        assert image is None
    else:
        assert image.ndim == 4 and image.shape[0] == 1 and image.shape[3] == 3 and float(image.max()) <= 1.0
    rep = json.loads(report_json)
    assert base == "Base" and rep["verdict"]["relation"] == "derivative", rep["verdict"]
    assert out["ui"]["text"][0].split("\n")[0] == api.summary_line(rep) and "Base" in out["ui"]["text"][0]
    # the cache default is set when a node runs, under ComfyUI's user dir
    assert os.environ["FPCORE_CACHE"] == str(comfy.user / "model_fingerprint" / "cache")
    assert comfy.nodes.refs_dir() == str(comfy.user / "model_fingerprint" / "refs")
    out2 = node.identify("tuned.safetensors")
    assert json.loads(out2["result"][1])["stats"].get("cached") == "report"


def test_env_overrides_the_comfy_defaults(comfy, tmp_path, monkeypatch):
    monkeypatch.setenv("FPCORE_REFS", str(tmp_path / "elsewhere"))
    monkeypatch.setenv("FPCORE_CACHE", str(tmp_path / "cache-elsewhere"))
    assert comfy.nodes.refs_dir() == str(tmp_path / "elsewhere")
    assert comfy.nodes.ensure_cache_env() == str(tmp_path / "cache-elsewhere")


def test_identify_checkpoint_missing_file(comfy):
    out = comfy.pack.NODE_CLASS_MAPPINGS["ModelFingerprintIdentifyCheckpoint"]().identify("gone.safetensors")
    assert out["result"][0] == "unknown"
    assert "not found" in json.loads(out["result"][1])["error"]
    assert out["ui"]["text"][0].startswith("error:")


def test_is_changed_follows_the_file(comfy, registered, base_sd):
    node = comfy.pack.NODE_CLASS_MAPPINGS["ModelFingerprintIdentifyCheckpoint"]
    a = node.IS_CHANGED("Base.safetensors")
    import os
    st = os.stat(registered)
    os.utime(registered, ns=(st.st_atime_ns, st.st_mtime_ns + 10_000_000))
    assert node.IS_CHANGED("Base.safetensors") != a


# -- Identify Loaded Model --------------------------------------------------------------------------

def test_loaded_model_in_memory(comfy, registered, base_sd):
    model, clip, vae = comfy_objects(base_sd, np.float32)    # ComfyUI on the CPU keeps fp32
    node = comfy.pack.NODE_CLASS_MAPPINGS["ModelFingerprintIdentifyLoadedModel"]()
    out = node.identify(model, clip, vae)
    base, rep = out["result"][0], json.loads(out["result"][1])
    assert base == "Base"
    assert rep["format"] == "memory" and rep["sha256"] is None
    assert rep["verdict"]["relation"] == "same_weights"
    assert rep["architecture"]["family"] == "sd1"
    inputs = rep["inputs"]
    assert inputs["model"]["source"] == "memory"
    assert inputs["model"]["components"]["unet"]["relation"] == "same_weights"
    assert inputs["clip"]["components"]["clip_l"] == {**inputs["clip"]["components"]["clip_l"],
                                                      "relation": "same_weights", "ref": "Base"}
    assert inputs["vae"]["components"]["vae"]["relation"] == "same_weights"
    assert inputs["model"]["not_compared"]["tensors"] == 1      # model_sampling.sigmas
    text = out["ui"]["text"][0]
    assert text.splitlines()[0].startswith("MODEL (weights in memory): SD1.x: Same weights as Base")
    assert "CLIP (weights in memory): clip_l: same_weights Base" in text


def test_loaded_model_reads_unpatched_weights(comfy, registered, base_sd):
    """A LoRA patched in place: the state dict holds patched weights, backup the originals."""
    model, _, _ = comfy_objects(base_sd)
    state = model.model._state
    key = "diffusion_model.input_blocks.1.1.proj_in.weight"
    original = state[key]
    state[key] = original + np.float32(0.5)
    model.backup = {key: types.SimpleNamespace(weight=original, inplace_update=False)}
    model.patches = {key: [("lora",)]}
    out = comfy.pack.NODE_CLASS_MAPPINGS["ModelFingerprintIdentifyLoadedModel"]().identify(model)
    rep = json.loads(out["result"][1])
    assert rep["verdict"]["relation"] == "same_weights"
    assert rep["inputs"]["model"]["patched_weights"] == 1
    assert "1 patched weights (LoRA/merge) not included" in out["ui"]["text"][0]


def test_loaded_model_from_its_file(comfy, registered, base_sd):
    """Recent ComfyUI records (loader, (ckpt_path, ...), index) in cached_patcher_init."""
    model, clip, vae = comfy_objects(base_sd)
    init = (lambda *a, **k: None, (str(registered), True, True), 0)
    model.cached_patcher_init = init
    clip.patcher.cached_patcher_init = init
    out = comfy.pack.NODE_CLASS_MAPPINGS["ModelFingerprintIdentifyLoadedModel"]().identify(model, clip, vae)
    rep = json.loads(out["result"][1])
    assert out["result"][0] == "Base"
    assert rep["path"] == str(registered) and rep["sha256"] and rep["format"] == "safetensors"
    assert rep["inputs"]["model"]["source"] == "file" and rep["inputs"]["clip"]["source"] == "file"
    assert rep["inputs"]["vae"]["source"] == "memory"
    assert rep["inputs"]["clip"]["components"]["clip_l"]["ref"] == "Base"
    assert out["ui"]["text"][0].startswith("MODEL (Base.safetensors): ")


def test_source_path_forms(comfy, registered, tmp_path):
    sp = comfy.nodes.source_path
    p = str(registered)
    mk = lambda init: types.SimpleNamespace(cached_patcher_init=init)   # noqa: E731
    assert sp(mk((print, (p,)))) == p
    assert sp(mk((print, ([p], None)))) == p                     # text encoders: a list of paths
    assert sp(mk((print, ([p, p], None)))) is None               # two files: no single source
    assert sp(mk((print, (str(tmp_path / "missing.safetensors"),)))) is None
    assert sp(mk(None)) is None and sp(mk("nonsense")) is None and sp(None) is None
    assert sp(types.SimpleNamespace(patcher=mk((print, (p,), 0)))) == p   # CLIP / VAE: on .patcher


def test_loaded_model_unreadable_is_reported_not_raised(comfy, registered):
    class Broken:
        model = types.SimpleNamespace(state_dict=lambda: (_ for _ in ()).throw(RuntimeError("meta tensors")))
        patches = {}
    out = comfy.pack.NODE_CLASS_MAPPINGS["ModelFingerprintIdentifyLoadedModel"]().identify(Broken())
    rep = json.loads(out["result"][1])
    assert out["result"][0] == "unknown" and "meta tensors" in rep["error"]


# -- memsource ---------------------------------------------------------------------------------------

FP8 = {"F8_E4M3": (ml_dtypes.float8_e4m3fn, 448.0), "F8_E5M2": (ml_dtypes.float8_e5m2, 57344.0)}
NP_TYPES = {"F16": np.float16, "BF16": ml_dtypes.bfloat16, "F32": np.float32}


def _np_in(dt: str, arr: np.ndarray) -> np.ndarray:
    if dt in FP8:
        t, lim = FP8[dt]
        return np.clip(arr, -lim, lim).astype(t)
    return arr.astype(NP_TYPES[dt])


@pytest.mark.parametrize("dt", ["F16", "BF16", "F32", "F8_E4M3", "F8_E5M2"])
def test_memory_fingerprint_equals_file_fingerprint(tmp_path, base_sd, dt):
    """Same bytes sampled from memory as from the file written in the same dtype."""
    path = tmp_path / f"m-{dt}.safetensors"
    testkit.write_safetensors(path, base_sd, dt)
    with SafetensorsFile(path) as f:
        want = fingerprint_source(f)
    mem = {k: (_np_in(dt, v) if v.dtype.kind == "f" else v) for k, v in base_sd.items()}
    with MemorySource(mem) as src:
        assert {k: (t.dtype, t.shape) for k, t in src.tensors.items()} == \
               {k: (t.dtype, t.shape) for k, t in SafetensorsFile(path).tensors.items()}
        got = fingerprint_source(src)
        assert src.bytes_read == len(got.raw)
    assert got.keys == want.keys and got.raw == want.raw
    assert (got.h_raw == want.h_raw).all() and (got.h_val == want.h_val).all()
    assert got.format == "memory"


def test_memsource_interface_and_strided_arrays():
    a = np.arange(60, dtype=np.float32).reshape(6, 10)
    src = MemorySource({"w": a.T, "s": np.float16(3.0) * np.ones((), np.float16), "c": np.zeros(3, np.complex64)},
                       name="<test>")
    assert src.path == "<test>" and src.format == "memory" and src.metadata == {}
    assert src.skipped == {"c": "complex64"}
    assert src.tensors["w"].shape == (10, 6) and src.tensors["w"].nbytes == 240 and src.size == 242
    (w, s) = src.read_elements([("w", 7, 9), ("s", 0, 1)])
    assert np.frombuffer(w, "<f4").tolist() == a.T.reshape(-1)[7:16].tolist()
    assert np.frombuffer(s, "<f2").tolist() == [3.0]
    with pytest.raises(BadFileError):
        src.read_elements([("w", 55, 10)])
    with src:
        pass
    assert src._data == {}


def test_big_endian_arrays_are_read_little_endian():
    a = np.arange(8, dtype=">f4")
    (b,) = MemorySource({"x": a}).read_elements([("x", 2, 3)])
    assert np.frombuffer(b, "<f4").tolist() == [2.0, 3.0, 4.0]


def test_dtype_names():
    assert dtype_name(np.zeros(1, np.float16)) == "F16"
    assert dtype_name(np.zeros(1, ml_dtypes.bfloat16)) == "BF16"
    assert dtype_name(types.SimpleNamespace(dtype="torch.float8_e4m3fn")) == "F8_E4M3"
    assert dtype_name(types.SimpleNamespace(dtype="torch.float8_e5m2")) == "F8_E5M2"
    assert dtype_name(types.SimpleNamespace(dtype="torch.qint8")) is None
    assert dtype_name(object()) is None


def test_remap_comfy_layouts():
    t = np.zeros(1, np.float32)
    m, un = remap({"diffusion_model.out.0.weight": t, "model_sampling.sigmas": t}, "model")
    assert set(m) == {"model.diffusion_model.out.0.weight", "unmapped.model.model_sampling.sigmas"}
    assert un == ["model_sampling.sigmas"]
    c, un = remap({"clip_l.transformer.text_model.final_layer_norm.weight": t,
                   "clip_g.transformer.text_model.final_layer_norm.weight": t}, "clip")
    assert "cond_stage_model.transformer.text_model.final_layer_norm.weight" in c and len(un) == 1
    v, un = remap({"decoder.conv_in.weight": t}, "vae")
    assert v == {"first_stage_model.decoder.conv_in.weight": t} and un == []
    from fpcore import layout
    assert layout.canonical("unmapped.vae.x")[0] == "other"


def test_identify_tensors_without_references(tmp_path, base_sd):
    from fpcore.refs.library import RefDB
    rep = identify_tensors(_as(base_sd, np.float16), RefDB(tmp_path / "r", builtin_dir=tmp_path / "nb"))
    assert rep["verdict"]["relation"] == "unknown" and rep["architecture"]["family"] == "sd1"
    assert rep["stats"]["bytes_read"] < rep["stats"]["tensor_bytes"] / 50


def test_memsource_does_not_import_torch_or_a_host():
    code = ("import sys, fpcore.sources.memory; "
            "print([m for m in ('torch', 'comfy', 'folder_paths') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# -- real torch tensors, where torch is installed --------------------------------------------------

TORCH_DT = {"F16": "float16", "BF16": "bfloat16", "F32": "float32", "F8_E4M3": "float8_e4m3fn", "F8_E5M2": "float8_e5m2"}


@pytest.mark.parametrize("dt", list(TORCH_DT))
def test_torch_tensors_sample_like_the_file(tmp_path, base_sd, dt):
    torch = pytest.importorskip("torch", reason="torch not installed: torch tensors not tested (numpy ones are)")
    path = tmp_path / f"t-{dt}.safetensors"
    testkit.write_safetensors(path, base_sd, dt)
    with SafetensorsFile(path) as f:
        want = fingerprint_source(f)
    tdt = getattr(torch, TORCH_DT[dt])
    mem = {}
    for k, v in base_sd.items():
        if v.dtype.kind != "f":
            mem[k] = torch.from_numpy(v)
        else:   # round in numpy (same rounding as the file), then reinterpret as the torch dtype
            raw = _np_in(dt, v)
            ints = torch.from_numpy(raw.view({1: np.uint8, 2: np.int16, 4: np.int32}[raw.itemsize]).copy())
            mem[k] = torch.nn.Parameter(ints.view(tdt), requires_grad=False) if v.ndim >= 2 else ints.view(tdt)
    got = fingerprint_source(MemorySource(mem))
    assert got.raw == want.raw and (got.h_val == want.h_val).all()


def test_torch_strided_and_grad_tensors():
    torch = pytest.importorskip("torch", reason="torch not installed")
    a = torch.arange(60, dtype=torch.float32).reshape(6, 10)
    p = torch.nn.Parameter(torch.ones(4, 4, dtype=torch.bfloat16))     # requires_grad
    src = MemorySource({"t": a.t(), "p": p, "b": torch.tensor([True, False])})
    t, pb, bb = src.read_elements([("t", 7, 9), ("p", 3, 2), ("b", 0, 2)])
    assert np.frombuffer(t, "<f4").tolist() == a.t().reshape(-1)[7:16].tolist()
    assert np.frombuffer(pb, ml_dtypes.bfloat16).astype(np.float32).tolist() == [1.0, 1.0]
    assert bb == b"\x01\x00"
    assert src.tensors["b"].dtype == "BOOL"
