"""Standalone text encoders in the Hugging Face layout, seen in the open_clip layout.

``clip_g.safetensors`` (SD3, Flux, ComfyUI's models/clip) and SDXL's
``text_encoder_2/model.safetensors`` hold OpenCLIP bigG in the Hugging Face CLIP layout
(separate q/k/v projections, a transposed text projection); SDXL checkpoints hold it in
the open_clip layout. Sample positions come from the canonical key and shape, so the
HF file is exposed in the open_clip layout (the same virtual tensors as a diffusers
folder's text_encoder_2) and fingerprints like the CLIP-G inside a checkpoint.
CLIP-L keeps the HF layout everywhere and is left as it is.
"""
from __future__ import annotations

import re

from .base import Source
from .diffusers import DiffusersFolder

#: number of transformer layers -> prefix of that encoder in the single-file layout
OPENCLIP_BY_LAYERS = {32: "conditioner.embedders.1.model.",   # OpenCLIP ViT-bigG (CLIP-G)
                      24: "cond_stage_model.model.", 23: "cond_stage_model.model."}  # ViT-H (SD2)
LAYER = re.compile(r"^text_model\.encoder\.layers\.(\d+)\.")


def hf_clip_layers(tensors) -> int:
    n = -1
    for k in tensors:
        m = LAYER.match(k)
        if m:
            n = max(n, int(m.group(1)))
    return n + 1


def wrap(src):
    """``src`` itself, or a view of it in the open_clip layout when it is a bare HF CLIP-G/H."""
    if "text_model.embeddings.token_embedding.weight" not in src.tensors:
        return src
    prefix = OPENCLIP_BY_LAYERS.get(hf_clip_layers(src.tensors))
    return OpenClipView(src, prefix) if prefix else src


class OpenClipView(DiffusersFolder):
    """A bare HF-layout CLIP-G/H file under its open_clip key names (other keys pass through)."""

    def __init__(self, src, prefix: str):
        Source.__init__(self, src.path)
        self.format = src.format
        self.root = src.path
        self.size = src.size
        self.metadata = dict(src.metadata)
        self.identity = getattr(src, "identity", None)
        self._files = [src]
        self._virt = {}
        self._openclip(src, prefix)
        for k in src.tensors:
            if not k.startswith("text_model.") and k != "text_projection.weight" and k not in self.tensors:
                self._direct(src, k, k)
