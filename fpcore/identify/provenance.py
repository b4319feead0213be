"""Provenance: what a file's metadata says about where it came from."""
from __future__ import annotations

import json

from ..facts import is_model_file

#: (how to select keys, report section)
SECTIONS = [
    (lambda k: k.startswith("modelspec."), "modelspec"),
    (lambda k: k.startswith("ss_") or k.startswith("sshs_"), "kohya"),
    (lambda k: k in ("sd_merge_recipe", "sd_merge_models"), "a1111_merge"),
    (lambda k: k in ("prompt", "workflow"), "comfyui"),
    (lambda k: k == "format", "format"),
]
#: kohya keys that are long and say little about provenance
KOHYA_SKIP = {"ss_tag_frequency", "ss_dataset_dirs", "ss_datasets", "ss_bucket_info"}
MAX_VALUE = 500


def _json(v: str):
    try:
        return json.loads(v)
    except (ValueError, TypeError, RecursionError):   # RecursionError: a value nested thousands deep
        return v


def _short(v):
    if isinstance(v, str) and len(v) > MAX_VALUE:
        return v[:MAX_VALUE] + f"… ({len(v)} chars)"
    return v


#: ComfyUI nodes that load a checkpoint or diffusion model (a workflow's node ``type``), and the
#: inputs of an API prompt that name one: the models a saved checkpoint was made from
COMFY_CHECKPOINT_NODES = ("CheckpointLoader", "UNETLoader", "DiffusionModelLoader")
COMFY_CHECKPOINT_INPUTS = ("ckpt_name", "unet_name")


def _comfy_summary(value: str) -> dict:
    """Model files and node count named by a ComfyUI prompt/workflow, and among them the
    checkpoints it loaded (``checkpoints``)."""
    data = _json(value)
    models, ckpts, n_nodes = set(), set(), 0
    nodes = []
    if isinstance(data, dict) and isinstance(data.get("nodes"), list):      # workflow
        nodes = data["nodes"]
        for n in nodes:
            loader = isinstance(n, dict) and any(t in str(n.get("type", "")) for t in COMFY_CHECKPOINT_NODES)
            ws = n.get("widgets_values") if isinstance(n, dict) else None
            for w in ws if isinstance(ws, list) else []:
                if isinstance(w, str) and is_model_file(w):
                    models.add(w)
                    if loader:
                        ckpts.add(w)
    elif isinstance(data, dict):                                            # API prompt
        nodes = list(data.values())
        for n in nodes:
            inputs = n.get("inputs", {}) if isinstance(n, dict) else {}
            for k, w in inputs.items() if isinstance(inputs, dict) else []:
                if isinstance(w, str) and is_model_file(w):
                    models.add(w)
                    if k in COMFY_CHECKPOINT_INPUTS:
                        ckpts.add(w)
    n_nodes = len(nodes)
    return {"nodes": n_nodes, "models": sorted(models), "checkpoints": sorted(ckpts)}


def extract(metadata: dict[str, str]) -> dict:
    out: dict = {}
    for k, v in (metadata or {}).items():
        for sel, section in SECTIONS:
            if not sel(k):
                continue
            if section == "format":
                out["format"] = v
            elif section == "comfyui":
                out.setdefault("comfyui", {})[k] = _comfy_summary(v)
            elif section == "a1111_merge":
                out.setdefault("a1111_merge", {})[k] = _json(v)
            elif section == "kohya":
                if k not in KOHYA_SKIP:
                    out.setdefault("kohya", {})[k] = _short(v)
            else:
                out.setdefault(section, {})[k] = _short(v)
            break
    return out


def summary(prov: dict) -> str | None:
    """A short phrase naming the strongest provenance claim, if any."""
    ms = prov.get("modelspec", {})
    if ms.get("modelspec.title"):
        return f"modelspec title {ms['modelspec.title']!r}"
    if "a1111_merge" in prov:
        return "A1111 merge recipe present"
    if "kohya" in prov:
        base = prov["kohya"].get("ss_sd_model_name")
        return f"kohya training metadata (base {base!r})" if base else "kohya training metadata"
    if "comfyui" in prov:
        return "saved by ComfyUI"
    return None
