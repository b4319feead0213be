"""Facts about model families and files that several modules need: one table, read by all.

Each architecture family id (the ``architecture.family`` of a report) has a display name
and the values A1111 and Forge use for it in a model's sidecar ``<model>.json``:
A1111's ``sd version`` (set for LoRAs: ``SD1``/``SD2``/``SDXL``) and Forge's
``sd_version_str`` (set for checkpoints: ``SdVersion.*``). ``None`` means the host has no
value for the family; the sidecar then says ``Unknown`` / ``SdVersion.Unknown``.

Detection rules (which keys make a family) live in ``arch``; this module holds names only,
so it imports nothing and any layer may read it.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Family:
    id: str
    name: str                  # what users read ("SDXL", "Flux.1")
    a1111: str | None = None   # A1111 "sd version" (LoRA sidecars)
    forge: str | None = None   # Forge "sd_version_str" (checkpoint sidecars)


_SD1, _SD2, _XL = ("SD1", "SdVersion.SD1"), ("SD2", "SdVersion.SD2"), ("SDXL", "SdVersion.SDXL")

FAMILIES: dict[str, Family] = {f.id: f for f in (
    Family("sd1", "SD1.x", *_SD1),
    Family("sd1_inpaint", "SD1.x inpainting", *_SD1),
    Family("sd1_pix2pix", "SD1.x InstructPix2Pix", *_SD1),
    Family("sd2", "SD2.x", *_SD2),
    Family("sd2_inpaint", "SD2.x inpainting", *_SD2),
    Family("sd2_depth", "SD2.x depth", *_SD2),
    Family("sd2_unclip", "SD2.x unCLIP", "SD2"),   # Forge has no unCLIP version
    Family("sdxl", "SDXL", *_XL),
    Family("sdxl_inpaint", "SDXL inpainting", *_XL),
    Family("sdxl_refiner", "SDXL refiner", *_XL),
    Family("ssd1b", "SSD-1B", *_XL),
    Family("segmind_vega", "Segmind Vega", *_XL),
    Family("koala", "KOALA", "SDXL"),              # Forge cannot load KOALA's pruned UNet as SDXL
    Family("kolors", "Kolors"),
    Family("sd3", "SD3", forge="SdVersion.SD3"),
    Family("flux", "Flux.1", forge="SdVersion.Flux"),
    Family("flux2", "Flux.2"),
    Family("chroma", "Chroma"),
    Family("auraflow", "AuraFlow"),
    Family("hunyuan_dit", "HunyuanDiT"),
    Family("pixart_alpha", "PixArt-α"),
    Family("pixart_sigma", "PixArt-Σ"),
    Family("stable_cascade_b", "Stable Cascade stage B"),
    Family("stable_cascade_c", "Stable Cascade stage C"),
    Family("lumina2", "Lumina 2"),
    Family("hidream", "HiDream"),
    Family("qwen_image", "Qwen-Image"),
    Family("wan", "Wan"),
    Family("ltxv", "LTX-Video"),
    Family("hunyuan_video", "HunyuanVideo"),
    Family("mochi", "Mochi"),
    Family("cosmos", "Cosmos"),
    Family("svd", "Stable Video Diffusion"),
    Family("unknown", "unknown-architecture"),
)}

#: sidecar values for a family the hosts do not know
A1111_UNKNOWN, FORGE_UNKNOWN = "Unknown", "SdVersion.Unknown"

#: ``architecture.kind`` of files that are not whole checkpoints -> what users read
KIND_NAMES = {"lora": "LoRA", "lycoris": "LyCORIS", "textual_inversion": "textual-inversion embedding",
              "controlnet": "ControlNet", "vae": "VAE", "text_encoder": "text encoder"}
#: kinds whose sidecar gets A1111's "sd version" (A1111 reads it for extra networks)
LORA_KINDS = ("lora", "lycoris")

#: file extensions of model files: what a folder scan, the UI's dropdown and provenance look for
SAFETENSORS_EXTS = (".safetensors", ".sft")
CKPT_EXTS = (".ckpt", ".pt", ".pth", ".bin")    # torch zip or legacy pickle, read without running pickle code
GGUF_EXTS = (".gguf",)
MODEL_EXTS = SAFETENSORS_EXTS + CKPT_EXTS + GGUF_EXTS


def family_name(family: str | None) -> str:
    """Display name of a family id (the id itself when the table does not know it)."""
    f = FAMILIES.get(family or "unknown")
    return f.name if f else str(family)


def a1111_sd_version(family: str | None) -> str:
    f = FAMILIES.get(family or "unknown")
    return (f.a1111 if f else None) or A1111_UNKNOWN


def forge_sd_version(family: str | None) -> str:
    f = FAMILIES.get(family or "unknown")
    return (f.forge if f else None) or FORGE_UNKNOWN


def is_model_file(name: str) -> bool:
    return name.lower().endswith(MODEL_EXTS)


def dominant_dtype(dtype_names) -> str | None:
    """The short name ("fp16", "bf16", ...) of the most frequent safetensors dtype name in
    ``dtype_names`` (one per tensor); a name the dtype table does not know is lower-cased."""
    counts: dict[str, int] = {}
    for d in dtype_names:
        counts[d] = counts.get(d, 0) + 1
    if not counts:
        return None
    top = max(counts, key=counts.get)
    from .dtypes import DTYPES   # numpy: only when there is something to name
    return DTYPES[top].short if top in DTYPES else str(top).lower()


#: sizes are shown in decimal units everywhere (CLI, HTML report, UI): 1 GB = 10^9 bytes, as disks are sold
BYTE_UNITS = ("B", "kB", "MB", "GB", "TB", "PB")


def format_bytes(n: int | float) -> str:
    """'418 MB', '6.94 GB', '512 B' (decimal units, three significant digits)."""
    n = float(n or 0)
    for unit in BYTE_UNITS:
        if abs(n) < 1000 or unit == BYTE_UNITS[-1]:
            if unit == "B":
                return f"{n:.0f} B"
            return f"{n:.0f} {unit}" if abs(n) >= 100 else f"{n:.1f} {unit}" if abs(n) >= 10 else f"{n:.2f} {unit}"
        n /= 1000
    return f"{n:.0f} B"  # unreachable
