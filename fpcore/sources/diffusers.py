"""Diffusers folders, exposed under the original single-file (LDM / SGM) key names.

Sample positions depend on the canonical key and shape only, so a diffusers copy must
show the keys and shapes of the single file to fingerprint like it. The names come from
the pure maps in ``fpcore.sources.keymaps``; the views (renames, reshapes, q/k/v concatenation,
transposed text projection) from ``views.VirtualSource``. Each component file is opened
with the raw opener: no view is applied to it before the folder maps its keys.
"""
from __future__ import annotations

import json
import logging
import os

from . import keymaps
from ..errors import BadFileError, UnsupportedError
from .views import VirtualSource

log = logging.getLogger(__name__)

#: weight files tried in each component folder, in order of preference
WEIGHT_NAMES = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.fp16.safetensors",
                "model.safetensors", "model.fp16.safetensors", "diffusion_pytorch_model.bin",
                "diffusion_pytorch_model.fp16.bin", "pytorch_model.bin", "pytorch_model.fp16.bin")


class DiffusersFolder(VirtualSource):
    format = "diffusers"

    def __init__(self, path: str | os.PathLike, open_file):
        """``open_file``: the raw opener of one component file (``fpcore.sources.open_file``)."""
        p = os.fspath(path)
        root = os.path.dirname(p) if os.path.basename(p) == "model_index.json" else p
        super().__init__(p)
        self.root = root
        self._open_file = open_file
        try:
            self._open()
        except BaseException:
            self.close()
            raise

    def _weights(self, sub: str):
        d = os.path.join(self.root, sub)
        if not os.path.isdir(d):
            return None
        for n in WEIGHT_NAMES:
            f = os.path.join(d, n)
            if os.path.isfile(f):
                src = self._open_file(f)
                self._files.append(src)
                self.size += src.size
                return src
        if any(n.endswith(".index.json") for n in os.listdir(d)):
            raise UnsupportedError(f"{sub}/ holds sharded weights, which are not supported yet", self.root)
        return None

    def _open(self) -> None:
        root = self.root
        idx = os.path.join(root, "model_index.json")
        if os.path.isfile(idx):
            try:
                with open(idx, encoding="utf-8") as f:
                    mi = json.load(f)
                if isinstance(mi, dict):
                    for k in ("_class_name", "_diffusers_version"):
                        if isinstance(mi.get(k), str):
                            self.metadata[f"diffusers.{k}"] = mi[k]
            except (OSError, ValueError, RecursionError) as e:
                raise BadFileError(f"model_index.json is not valid JSON ({e})", root) from None
        unet, vae = self._weights("unet"), self._weights("vae")
        te, te2 = self._weights("text_encoder"), self._weights("text_encoder_2")
        transformer = self._weights("transformer")
        if not any((unet, vae, te, te2, transformer)):
            raise UnsupportedError("not a diffusers folder (no unet/, transformer/, vae/ or text_encoder/ weights)", root)
        xl = unet is not None and "add_embedding.linear_1.weight" in unet.tensors
        if unet is not None:
            pairs = keymaps.unet_pairs(*keymaps.unet_structure(unet.tensors))
            for k in unet.tensors:
                self.add_direct(unet, k, "model.diffusion_model." + keymaps.map_key(k, pairs))
        if transformer is not None:   # DiT denoisers keep diffusers names (not mapped yet)
            for k in transformer.tensors:
                self.add_direct(transformer, k, "model.diffusion_model." + k)
        if vae is not None:
            pairs = keymaps.vae_pairs(*keymaps.vae_structure(vae.tensors))
            for k, t in vae.tensors.items():
                new = "first_stage_model." + keymaps.map_key(k, pairs)
                shape = t.shape
                if ".mid.attn_1." in new and len(shape) == 2 and new.endswith(".weight"):
                    shape = shape + (1, 1)        # linear -> 1x1 conv: same bytes
                self.add_direct(vae, k, new, shape)
        if te is not None:
            if any(k.startswith("text_model.encoder.layers.12.") for k in te.tensors):  # SD2: OpenCLIP ViT-H (23-24 layers)
                self.add_openclip(te, "cond_stage_model.model.")
            else:
                pre = "conditioner.embedders.0.transformer." if xl else "cond_stage_model.transformer."
                for k in te.tensors:
                    self.add_direct(te, k, pre + k)
        if te2 is not None:
            self.add_openclip(te2, "conditioner.embedders.1.model." if te is not None else "conditioner.embedders.0.model.")
