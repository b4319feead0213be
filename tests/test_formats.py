"""Other formats: torch checkpoints (safely), diffusers folders and GGUF give the same
fingerprint verdicts as the safetensors reference."""
from __future__ import annotations

import io
import os
import pickle
import subprocess
import sys
import zipfile

import numpy as np
import pytest

import testkit
from fpcore.errors import FpError, HeaderError, UnsafePickleError
from fpcore.sources import ckpt as ckpt_mod
from fpcore.identify import fingerprint_path, identify, identify_fingerprint
from fpcore.sources import open_source as open_model

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def fp16_values(sd):
    return {k: testkit.convert(v, "F16").astype(np.float32) if v.dtype == np.float32 else v for k, v in sd.items()}


def relation(rep):
    return rep["verdict"]["relation"], rep["verdict"]["base"]


# -- .ckpt ------------------------------------------------------------------------------
@pytest.mark.parametrize("wrap,transpose", [("state_dict", False), (None, True)])
def test_ckpt_copy_is_same_weights(tmp_path, lineage, db, wrap, transpose):
    p = tmp_path / "child.ckpt"
    testkit.write_torch_ckpt(p, fp16_values(lineage["Child"]), "F16", wrap=wrap, transpose_2d=transpose)
    rep = identify(p, db, hashes=False)
    assert rep["format"] == "ckpt" and rep["architecture"]["family"] == "sd1"
    assert relation(rep) == ("same_weights", "Child")
    with open_model(p) as src:
        assert src.bytes_read == 0 and len(src.tensors) == len(lineage["Child"])


def test_ckpt_fp32_reads_the_same_values(tmp_path, lineage):
    sd = fp16_values(lineage["Base"])
    testkit.write_safetensors(tmp_path / "a.safetensors", sd, "F16")
    testkit.write_torch_ckpt(tmp_path / "a.pt", sd, "F32")
    fa, fb = fingerprint_path(tmp_path / "a.safetensors")[0], fingerprint_path(tmp_path / "a.pt")[0]
    assert fa.keys == fb.keys and fa.h_val.tolist() == fb.h_val.tolist()


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.mark.parametrize("container", ["zip", "raw"])
def test_pickle_calling_os_system_is_refused(tmp_path, container):
    marker = tmp_path / "pwned"
    payload = pickle.dumps({"state_dict": {"x": _Evil(marker)}}, protocol=2)
    p = tmp_path / "evil.ckpt"
    if container == "zip":
        with zipfile.ZipFile(p, "w") as z:
            z.writestr("archive/data.pkl", payload)
    else:
        p.write_bytes(payload)
    with pytest.raises(UnsafePickleError) as e:
        open_model(p)
    msg = str(e.value)
    assert str(p) in msg and "system" in msg and "\n" not in msg
    assert not marker.exists()
    # and through the CLI: exit code 3, one line, nothing executed
    r = subprocess.run([sys.executable, "-m", "fpcore", "inspect", str(p)], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 3 and "refused" in r.stderr and "Traceback" not in r.stderr
    assert not marker.exists()


def test_ckpt_bounds(tmp_path, monkeypatch, lineage):
    p = tmp_path / "m.ckpt"
    testkit.write_torch_ckpt(p, {"a": np.zeros((4, 4), np.float32)}, "F16")
    monkeypatch.setattr(ckpt_mod, "MAX_PICKLE_BYTES", 16)
    with pytest.raises(HeaderError, match="limit"):
        open_model(p)
    monkeypatch.undo()
    # a storage shorter than the tensor claims: refused before any read
    pkl = testkit.torch_pickle([("a", "F16", (64, 64), "0", 4096, (64, 1))])
    with zipfile.ZipFile(p, "w") as z:
        z.writestr("archive/data.pkl", pkl)
        z.writestr("archive/data/0", b"\0" * 100)
    with pytest.raises(HeaderError, match="runs past"):
        open_model(p)


# -- diffusers --------------------------------------------------------------------------
@pytest.mark.parametrize("family", ["sd1", "sdxl"])
def test_diffusers_copy_is_same_weights(tmp_path, family, db, lineage):
    if family == "sd1":
        sd, want = fp16_values(lineage["Child"]), ("same_weights", "Child")
    else:  # an SDXL reference of its own: exercises CLIP-G q/k/v concat and the transposed projection
        sd = fp16_values(testkit.random_state_dict(testkit.checkpoint_spec("sdxl", "tiny"), 5))
        testkit.write_safetensors(tmp_path / "xl.safetensors", sd, "F16")
        from fpcore.identify import add_reference
        add_reference(db, tmp_path / "xl.safetensors", "XL")
        want = ("same_weights", "XL")
    testkit.write_diffusers(tmp_path / "pipe", sd, family, fp16_names=True)
    rep = identify(tmp_path / "pipe" / "model_index.json", db, hashes=False)
    assert rep["format"] == "diffusers" and rep["architecture"]["family"] == family
    assert relation(rep) == want
    for comp, r in rep["components"].items():
        assert r["relation"] == "same_weights", (comp, r)
    fp, a, _, _ = fingerprint_path(tmp_path / "pipe")          # the folder itself
    assert relation(identify_fingerprint(fp, a, db)) == want


# -- GGUF -------------------------------------------------------------------------------
def test_gguf_q8_copy_is_recognised(tmp_path, lineage, db):
    pytest.importorskip("gguf")
    p = tmp_path / "child-Q8_0.gguf"
    testkit.write_gguf(p, testkit.unet_only(lineage["Child"]), "Q8_0")
    rep = identify(p, db, hashes=False)
    assert rep["format"] == "gguf" and rep["architecture"]["family"] == "sd1"
    assert rep["architecture"]["kind"] == "unet_only"
    rel, base = relation(rep)
    assert rel in ("same_weights", "derivative") and base == "Child", rep["verdict"]
    with open_model(p) as src:
        fp_bytes = src.size
        fingerprint = fingerprint_path(p)
    assert fingerprint[3]["bytes_read"] < fp_bytes


# -- format sniffing and --why ------------------------------------------------------------
def test_ckpt_renamed_is_sniffed(tmp_path, lineage):
    p = tmp_path / "model.safetensors"
    testkit.write_torch_ckpt(p, {"a": np.ones((2, 3), np.float32)}, "F32")
    with open_model(p) as src:
        assert src.format == "ckpt" and src.tensors["a"].shape == (2, 3)
        assert np.frombuffer(src.read_elements([("a", 1, 4)])[0], "<f4").tolist() == [1.0] * 4


def test_inspect_why_cli(tmp_path):
    p = tmp_path / "flux.safetensors"
    testkit.write_spec_file(p, testkit.extra_spec("flux_fill"), "BF16", fill="sparse")
    r = subprocess.run([sys.executable, "-m", "fpcore", "inspect", str(p), "--why"], cwd=ROOT,
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "flux (fill)" in r.stdout and "matched rule: flux_fill" in r.stdout
    assert "rejected sd3_medium: missing dit:joint_blocks.0.context_block.attn.qkv.weight" in r.stdout


def test_standalone_hf_clip_g_matches_the_checkpoint_clip_g(tmp_path):
    """clip_g.safetensors (HF layout) fingerprints like the CLIP-G inside an SDXL checkpoint."""
    from fpcore.identify import add_reference, identify
    from fpcore.refs.library import RefDB
    sd = testkit.random_state_dict(testkit.checkpoint_spec("sdxl", "tiny"), 3)
    testkit.write_safetensors(tmp_path / "sdxl.safetensors", sd, "F16")
    pre = "conditioner.embedders.1.model."
    hf = {}
    for k, v in sd.items():
        if k.startswith(pre):
            hf.update(testkit.openclip_to_hf(k[len(pre):], v))
    testkit.write_safetensors(tmp_path / "clip_g.safetensors", hf, "BF16")
    db = RefDB(tmp_path / "r", builtin_dir=tmp_path / "n")
    add_reference(db, tmp_path / "sdxl.safetensors", "SDXL", hashes=False)
    rep = identify(tmp_path / "clip_g.safetensors", db, hashes=False)
    assert rep["error"] is None
    assert rep["architecture"]["components"] == ["clip_g"]
    assert rep["components"]["clip_g"]["relation"] == "same_weights" and rep["components"]["clip_g"]["ref"] == "SDXL"
