"""ComfyUI nodes: thin wrappers over fpcore (all logic lives in the engine).

Identify Checkpoint   a file from models/checkpoints -> base name, JSON report
Identify Loaded Model a MODEL (+ optional CLIP, VAE) -> base name, JSON report
LoRA Fit Check        a LoRA and a checkpoint (or MODEL) -> ok / warn, the reason

What "Identify Loaded Model" identifies: the base weights ComfyUI loaded. Where the
object says which file it was loaded from (``cached_patcher_init`` on recent
ComfyUI: ``(loader, (path, ...)[, index])``) that file is identified (hashed once,
then answered from fpcore's cache); otherwise the weights in memory are sampled
(fpcore.sources.memory: a few rows per tensor, nothing copied). ComfyUI keeps LoRAs and
model merges as patches beside the weights; they are not part of the answer (the
unpatched weights are read even while a patched model is loaded) and the report
lists them under ``inputs.<name>.patches``.

``folder_paths`` is imported when a node runs or lists its inputs, never at import,
so the pack also imports outside ComfyUI (tests).
"""
from __future__ import annotations

import json
import logging
import os

from .fpcore import api
from .fpcore import identify as _identify
from .fpcore.claims import wording
from .fpcore.refs.library import RefDB
from .fpcore.sources import keymaps

log = logging.getLogger(__name__)

CATEGORY = "Model Fingerprint"
DATA_DIR = "model_fingerprint"


# -- locations --------------------------------------------------------------------------------

def _user_dir() -> str:
    import folder_paths
    return os.path.join(folder_paths.get_user_directory(), DATA_DIR)


def refs_dir() -> str:
    """FPCORE_REFS, else <ComfyUI user dir>/model_fingerprint/refs."""
    return os.environ.get("FPCORE_REFS") or os.path.join(_user_dir(), "refs")


def ensure_cache_env() -> str:
    """FPCORE_CACHE defaults to <ComfyUI user dir>/model_fingerprint/cache (set when a node runs)."""
    return os.environ.setdefault("FPCORE_CACHE", os.path.join(_user_dir(), "cache"))


def _dump(report: dict) -> str:
    return json.dumps(report, indent=1, ensure_ascii=False, default=str)


def _base(report: dict) -> str:
    """The ``base`` output: the base's name, or a merge's recipe ("merge: A 50% + B 50%")."""
    return _identify.base_label(report or {})


PICTURE_SCALE = 1.5   # pixels per SVG unit of the IMAGE output (760 units wide -> 1140 px)


def _picture(report: dict):
    """(SVG for the node, IMAGE tensor [1, H, W, 3] in 0..1) of the report's picture
    (fpcore.picture; the IMAGE is the same scene drawn with Pillow, which ComfyUI ships).
    A report with nothing to draw (an error) gives "" and a small blank image."""
    from .fpcore import picture
    try:
        tree = picture.reference_tree(RefDB(refs_dir()))
        sc = picture.scene(report, tree)
    except Exception:  # the picture must never cost the user the answer
        log.exception("Model Fingerprint: cannot draw the picture")
        sc = None
    svg = picture.to_svg(sc, "node") if sc is not None else ""
    try:
        import numpy as np
        import torch
        if sc is not None:
            arr = np.asarray(picture.to_image(sc, PICTURE_SCALE), dtype=np.float32) / 255.0
        else:
            arr = np.ones((64, 256, 3), dtype=np.float32)
        image = torch.from_numpy(arr)[None]
    except ImportError as e:  # outside ComfyUI (tests without torch or Pillow): no pixels
        log.debug("Model Fingerprint: no IMAGE output: %s", e)
        image = None
    return svg, image


# -- exposure (ComfyUI --listen) ---------------------------------------------------------------

def exposure_policy():
    """The policy for any path or URL input: ComfyUI is reachable by others when ``--listen``
    (comfy.cli_args.args.listen, comma-separated) names an address that is not loopback; paths are
    then limited to folder_paths' checkpoints folders. The nodes take checkpoint names from
    folder_paths, so they need no check; a future path or URL input goes through this."""
    from .fpcore import exposure
    try:
        from comfy.cli_args import args
        listen = getattr(args, "listen", None)
    except Exception:  # outside ComfyUI
        return exposure.LOCAL
    exposed, why = exposure.comfy_exposure(listen)
    if not exposed:
        return exposure.LOCAL
    import folder_paths
    return exposure.make_policy(exposed, why, folder_paths.get_folder_paths("checkpoints"))


# -- where a loaded object came from ----------------------------------------------------------

def _patcher(obj):
    """The ModelPatcher of a MODEL (itself), CLIP or VAE (``.patcher``)."""
    if obj is None:
        return None
    return obj if hasattr(obj, "model") and hasattr(obj, "patches") else getattr(obj, "patcher", None)


def source_path(obj) -> str | None:
    """The file a loaded MODEL / CLIP / VAE was loaded from, if ComfyUI recorded it.

    Recent ComfyUI sets ``patcher.cached_patcher_init = (loader, args[, index])`` so it
    can rebuild the model; the loaders put the file path first in ``args`` (a list of
    paths for multi-file text encoders: then there is no single file)."""
    for holder in (obj, _patcher(obj)):
        init = getattr(holder, "cached_patcher_init", None) if holder is not None else None
        if isinstance(init, (tuple, list)) and len(init) >= 2 and isinstance(init[1], (tuple, list)) and init[1]:
            first = init[1][0]
            if isinstance(first, (list, tuple)) and len(first) == 1:
                first = first[0]
            if isinstance(first, (str, os.PathLike)) and os.path.isfile(first):
                return os.fspath(first)
    return None


def _unpatched_state(patcher, module) -> dict:
    """state_dict of ``module`` (views, no copies) with weights a patcher has currently
    patched in place replaced by their saved originals (``patcher.backup``)."""
    state = module.state_dict()
    backup = getattr(patcher, "backup", None) or {}
    for key, b in backup.items():
        if key in state:
            w = getattr(b, "weight", None)
            if w is None and isinstance(b, (tuple, list)) and b:
                w = b[0]
            if w is not None:
                state[key] = w
    return state


def _patch_info(patcher) -> dict:
    patches = getattr(patcher, "patches", None) or {}
    n = len(patches)
    return {"patched_weights": n,
            "note": (f"{n} weights carry LoRA/merge patches; the identification describes the weights "
                     "without them") if n else None}


def _memory_state(role: str, obj) -> dict:
    patcher = _patcher(obj)
    if role == "model":
        module = patcher.model
    elif role == "clip":
        module = getattr(obj, "cond_stage_model", None) or patcher.model
    else:
        module = getattr(obj, "first_stage_model", None) or patcher.model
    return _unpatched_state(patcher, module) if patcher is not None else module.state_dict()


def identify_loaded(model, clip=None, vae=None, *, refs=None, db=None) -> dict:
    """Report for a loaded MODEL: the MODEL's report, plus ``inputs`` saying for MODEL,
    CLIP and VAE where the answer came from and the verdict of their components."""
    db = db or RefDB(refs)
    file_reports: dict[str, dict] = {}
    inputs: dict[str, dict] = {}
    main = None
    for role, obj in (("model", model), ("clip", clip), ("vae", vae)):
        if obj is None:
            continue
        patcher = _patcher(obj)
        info = {"source": None, "path": None, **_patch_info(patcher)}
        path = source_path(obj)
        if path:
            if path not in file_reports:
                file_reports[path] = api.identify_file(path, db=db)
            rep = file_reports[path]
            info.update(source="file", path=path)
        else:
            try:
                state, unmapped = keymaps.remap(_memory_state(role, obj), role)
                rep = _identify.identify_tensors(state, db, name=f"<loaded {role.upper()}>")
                if unmapped:
                    info["not_compared"] = {"tensors": len(unmapped), "examples": unmapped[:3]}
            except Exception as e:  # a host object we cannot read: say so in the report
                log.warning("Model Fingerprint: cannot read the loaded %s: %s", role, e)
                rep = {"error": f"cannot read the loaded {role.upper()}: {e}", "components": {}, "verdict": None}
            info["source"] = "memory"
        wanted = {"model": ("unet", "dit"), "clip": ("clip_l", "clip_g", "clip_h", "t5"), "vae": ("vae",)}[role]
        info["components"] = {c: v for c, v in (rep.get("components") or {}).items() if c in wanted}
        info["error"] = rep.get("error")
        if role == "model":
            main = dict(rep)
            info["summary"] = api.summary_line(rep)
        inputs[role] = info
    if main is None:
        main = {"error": "no MODEL given", "verdict": None, "components": {}}
    main["inputs"] = inputs
    return main


def loaded_summary(report: dict) -> str:
    lines = []
    for role, info in (report.get("inputs") or {}).items():
        where = {"file": os.path.basename(info.get("path") or ""), "memory": "weights in memory"}.get(info["source"], "?")
        if info.get("error"):
            text = f"error: {info['error']}"
        elif role == "model":
            text = info.get("summary") or ""
        else:
            parts = [f"{c}: {v.get('relation')}" + (f" {v['ref']}" if v.get("ref") else "")
                     for c, v in info.get("components", {}).items()]
            text = "; ".join(parts) or "no comparable weights"
        lines.append(f"{role.upper()} ({where}): {text}")
        if info.get("patched_weights"):
            lines.append(f"  + {info['patched_weights']} patched weights (LoRA/merge) not included")
    return "\n".join(lines)


# -- nodes ----------------------------------------------------------------------------------------

class IdentifyCheckpoint:
    """Identify a checkpoint file: architecture, registered base, relation."""

    CATEGORY = CATEGORY
    RETURN_TYPES = ("STRING", "STRING", "IMAGE")
    RETURN_NAMES = ("base", "report_json", "picture")
    FUNCTION = "identify"
    OUTPUT_NODE = True
    DESCRIPTION = "Identify a checkpoint (architecture; base model; identical / same weights / fine-tune / merge)."

    @classmethod
    def INPUT_TYPES(cls):
        import folder_paths
        return {"required": {"ckpt_name": (folder_paths.get_filename_list("checkpoints"),)}}

    @classmethod
    def IS_CHANGED(cls, ckpt_name):
        # re-run when the file or the user references change (ComfyUI caches outputs otherwise)
        import folder_paths
        out = []
        for p in (folder_paths.get_full_path("checkpoints", ckpt_name), refs_dir()):
            try:
                st = os.stat(p) if p else None
                out.append(f"{st.st_size}:{st.st_mtime_ns}" if st else "-")
            except OSError:
                out.append("-")
        return "|".join(out)

    def identify(self, ckpt_name):
        import folder_paths
        ensure_cache_env()
        path = folder_paths.get_full_path("checkpoints", ckpt_name)
        if path is None:
            report = {"path": ckpt_name, "verdict": None, "error": f"{ckpt_name}: not found in the checkpoints folders"}
        else:
            report = api.identify_file(path, refs_dir=refs_dir())
        summary = "\n".join([api.summary_line(report), *wording.extra_lines(report)])
        svg, image = _picture(report)
        return {"ui": {"text": [summary], "picture": [svg]}, "result": (_base(report), _dump(report), image)}


class IdentifyLoadedModel:
    """Identify the weights a MODEL (and optionally CLIP, VAE) holds."""

    CATEGORY = CATEGORY
    RETURN_TYPES = ("STRING", "STRING", "IMAGE")
    RETURN_NAMES = ("base", "report_json", "picture")
    FUNCTION = "identify"
    OUTPUT_NODE = True
    DESCRIPTION = ("Identify a loaded model: the file it was loaded from where ComfyUI records it, else a sample of "
                   "the weights in memory. LoRA and merge patches are listed, not included.")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"model": ("MODEL",)}, "optional": {"clip": ("CLIP",), "vae": ("VAE",)}}

    def identify(self, model, clip=None, vae=None):
        ensure_cache_env()
        report = identify_loaded(model, clip, vae, refs=refs_dir())
        svg, image = _picture(report)
        text = "\n".join([loaded_summary(report), *wording.extra_lines(report)])
        return {"ui": {"text": [text], "picture": [svg]},
                "result": (_base(report), _dump(report), image)}


FROM_MODEL = "(the MODEL input)"


class LoraFit:
    """Does a LoRA fit a checkpoint (a file, or the MODEL wired in)? ok or warn, with the reason."""

    CATEGORY = CATEGORY
    RETURN_TYPES = ("STRING", "STRING", "STRING")
    RETURN_NAMES = ("status", "reason", "report_json")
    FUNCTION = "check"
    OUTPUT_NODE = True
    DESCRIPTION = ("Whether a LoRA fits a checkpoint: the checkpoint its training metadata names, against the "
                   "checkpoint's lineage. ok, or warn with the reason.")

    @classmethod
    def INPUT_TYPES(cls):
        import folder_paths
        return {"required": {"lora_name": (folder_paths.get_filename_list("loras"),),
                             "ckpt_name": ([FROM_MODEL] + folder_paths.get_filename_list("checkpoints"),)},
                "optional": {"model": ("MODEL",)}}

    def check(self, lora_name, ckpt_name, model=None):
        import folder_paths
        ensure_cache_env()
        lora = folder_paths.get_full_path("loras", lora_name)
        if model is not None and ckpt_name == FROM_MODEL:
            ckpt = identify_loaded(model, refs=refs_dir())
        elif ckpt_name == FROM_MODEL:
            ckpt = {"path": None, "verdict": None, "error": "wire a MODEL in, or choose a checkpoint"}
        else:
            ckpt = folder_paths.get_full_path("checkpoints", ckpt_name) or {
                "path": ckpt_name, "verdict": None, "error": f"{ckpt_name}: not found in the checkpoints folders"}
        if lora is None:
            res = {"status": "warn", "fit": "unknown", "reason": f"{lora_name}: not found in the loras folders"}
        else:
            res = api.lora_fit(lora, ckpt, refs_dir=refs_dir())
        return {"ui": {"text": [f"{res['status']}: {res['reason']}"]},
                "result": (res["status"], res["reason"], _dump(res))}


NODE_CLASS_MAPPINGS = {
    "ModelFingerprintIdentifyCheckpoint": IdentifyCheckpoint,
    "ModelFingerprintIdentifyLoadedModel": IdentifyLoadedModel,
    "ModelFingerprintLoraFit": LoraFit,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "ModelFingerprintIdentifyCheckpoint": "Identify Checkpoint",
    "ModelFingerprintIdentifyLoadedModel": "Identify Loaded Model",
    "ModelFingerprintLoraFit": "LoRA Fit Check",
}
