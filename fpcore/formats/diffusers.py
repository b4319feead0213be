"""Diffusers folders, exposed under the original single-file (LDM / SGM) key names.

Sample positions depend on the canonical key and shape only, so a diffusers copy must
show the keys and shapes of the single file to fingerprint like it. The mapping is
data: per component a list of (diffusers prefix, original prefix) pairs generated for
the block structure found in the folder, plus suffix renames inside ResNet and VAE
attention blocks. Tensors that the original stores differently are virtual:
the VAE attention linears (c, c) become 1x1 convs (c, c, 1, 1) (a reshape, same bytes),
the open_clip ``in_proj_weight`` is the concatenation of the HF q/k/v projections, and
the open_clip ``text_projection`` is the transpose of the HF linear weight.
"""
from __future__ import annotations

import json
import logging
import os
import re

from ..errors import BadFileError, UnsupportedError
from ..reader import TensorInfo
from .base import Source

log = logging.getLogger(__name__)

#: weight files tried in each component folder, in order of preference
WEIGHT_NAMES = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.fp16.safetensors",
                "model.safetensors", "model.fp16.safetensors", "diffusion_pytorch_model.bin",
                "diffusion_pytorch_model.fp16.bin", "pytorch_model.bin", "pytorch_model.fp16.bin")

UNET_RESNET = {"norm1": "in_layers.0", "conv1": "in_layers.2", "time_emb_proj": "emb_layers.1",
               "norm2": "out_layers.0", "conv2": "out_layers.3", "conv_shortcut": "skip_connection"}
VAE_RESNET = {"conv_shortcut": "nin_shortcut"}
VAE_ATTN = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out",
            "query": "q", "key": "k", "value": "v", "proj_attn": "proj_out"}
CLIP_TO_OPENCLIP = [  # (HF inner regex, open_clip template)
    (r"^text_model\.embeddings\.token_embedding\.weight$", "token_embedding.weight"),
    (r"^text_model\.embeddings\.position_embedding\.weight$", "positional_embedding"),
    (r"^text_model\.encoder\.layers\.(\d+)\.self_attn\.out_proj\.(weight|bias)$", "transformer.resblocks.{0}.attn.out_proj.{1}"),
    (r"^text_model\.encoder\.layers\.(\d+)\.layer_norm1\.(weight|bias)$", "transformer.resblocks.{0}.ln_1.{1}"),
    (r"^text_model\.encoder\.layers\.(\d+)\.layer_norm2\.(weight|bias)$", "transformer.resblocks.{0}.ln_2.{1}"),
    (r"^text_model\.encoder\.layers\.(\d+)\.mlp\.fc1\.(weight|bias)$", "transformer.resblocks.{0}.mlp.c_fc.{1}"),
    (r"^text_model\.encoder\.layers\.(\d+)\.mlp\.fc2\.(weight|bias)$", "transformer.resblocks.{0}.mlp.c_proj.{1}"),
    (r"^text_model\.final_layer_norm\.(weight|bias)$", "ln_final.{0}"),
]
QKV = re.compile(r"^text_model\.encoder\.layers\.(\d+)\.self_attn\.(q|k|v)_proj\.(weight|bias)$")


def _count(keys, prefix_fmt: str) -> int:
    n = 0
    while any(k.startswith(prefix_fmt.format(n)) for k in keys):
        n += 1
    return n


def unet_pairs(levels: int, nrb: int, up_attn: set[int]) -> list[tuple[str, str, str | None]]:
    """(diffusers prefix, LDM prefix, suffix table name) for an LDM UNet of this structure."""
    p: list[tuple[str, str, str | None]] = [
        ("time_embedding.linear_1.", "time_embed.0.", None), ("time_embedding.linear_2.", "time_embed.2.", None),
        ("add_embedding.linear_1.", "label_emb.0.0.", None), ("add_embedding.linear_2.", "label_emb.0.2.", None),
        ("conv_in.", "input_blocks.0.0.", None), ("conv_norm_out.", "out.0.", None), ("conv_out.", "out.2.", None),
        ("mid_block.resnets.0.", "middle_block.0.", "resnet"), ("mid_block.attentions.0.", "middle_block.1.", None),
        ("mid_block.resnets.1.", "middle_block.2.", "resnet")]
    s = nrb + 1
    for i in range(levels):
        for j in range(nrb):
            p.append((f"down_blocks.{i}.resnets.{j}.", f"input_blocks.{i * s + j + 1}.0.", "resnet"))
            p.append((f"down_blocks.{i}.attentions.{j}.", f"input_blocks.{i * s + j + 1}.1.", None))
        if i < levels - 1:
            p.append((f"down_blocks.{i}.downsamplers.0.conv.", f"input_blocks.{(i + 1) * s}.0.op.", None))
        for j in range(s):
            p.append((f"up_blocks.{i}.resnets.{j}.", f"output_blocks.{i * s + j}.0.", "resnet"))
            p.append((f"up_blocks.{i}.attentions.{j}.", f"output_blocks.{i * s + j}.1.", None))
        if i < levels - 1:
            p.append((f"up_blocks.{i}.upsamplers.0.", f"output_blocks.{i * s + nrb}.{2 if i in up_attn else 1}.", None))
    return p


def vae_pairs(levels: int, nrb: int) -> list[tuple[str, str, str | None]]:
    p: list[tuple[str, str, str | None]] = []
    for side in ("encoder", "decoder"):
        p.append((f"{side}.conv_norm_out.", f"{side}.norm_out.", None))
        p.append((f"{side}.mid_block.attentions.0.", f"{side}.mid.attn_1.", "vae_attn"))
        for j in range(2):
            p.append((f"{side}.mid_block.resnets.{j}.", f"{side}.mid.block_{j + 1}.", "vae_resnet"))
    for i in range(levels):
        for j in range(nrb):
            p.append((f"encoder.down_blocks.{i}.resnets.{j}.", f"encoder.down.{i}.block.{j}.", "vae_resnet"))
        if i < levels - 1:
            p.append((f"encoder.down_blocks.{i}.downsamplers.0.", f"encoder.down.{i}.downsample.", None))
        for j in range(nrb + 1):
            p.append((f"decoder.up_blocks.{i}.resnets.{j}.", f"decoder.up.{levels - 1 - i}.block.{j}.", "vae_resnet"))
        if i < levels - 1:
            p.append((f"decoder.up_blocks.{i}.upsamplers.0.", f"decoder.up.{levels - 1 - i}.upsample.", None))
    return p


SUFFIXES = {"resnet": UNET_RESNET, "vae_resnet": VAE_RESNET, "vae_attn": VAE_ATTN}


def map_key(key: str, pairs: list[tuple[str, str, str | None]], reverse: bool = False) -> str:
    """Rename ``key`` by the longest matching prefix pair (and its suffix table)."""
    best = None
    for d, o, table in pairs:
        src, dst = (o, d) if reverse else (d, o)
        if key.startswith(src) and (best is None or len(src) > len(best[0])):
            best = (src, dst, table)
    if best is None:
        return key
    src, dst, table = best
    rest = key[len(src):]
    if table:
        for a, b in SUFFIXES[table].items():
            a_, b_ = (b, a) if reverse else (a, b)
            if rest.startswith(a_ + "."):
                rest = b_ + rest[len(a_):]
                break
    return dst + rest


def unet_structure(keys) -> tuple[int, int, set[int]]:
    levels = _count(keys, "down_blocks.{}.")
    nrb = _count(keys, "down_blocks.0.resnets.{}.")
    up_attn = {i for i in range(levels) if any(k.startswith(f"up_blocks.{i}.attentions.") for k in keys)}
    return levels, nrb, up_attn


def vae_structure(keys) -> tuple[int, int]:
    return _count(keys, "encoder.down_blocks.{}."), _count(keys, "encoder.down_blocks.0.resnets.{}.")


class _Virtual:
    """How an exposed tensor is made of stored ones: ``parts`` (source, key, numel) concatenated
    in flat order, optionally transposed (2-D)."""

    def __init__(self, parts, transpose: tuple[int, int] | None = None):
        self.parts = parts
        self.transpose = transpose


class DiffusersFolder(Source):
    format = "diffusers"

    def __init__(self, path: str | os.PathLike):
        p = os.fspath(path)
        root = os.path.dirname(p) if os.path.basename(p) == "model_index.json" else p
        super().__init__(p)
        self.root = root
        self._files: list = []
        self._virt: dict[str, _Virtual] = {}
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
                from ..reader import open_model
                src = open_model(f)
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
            pairs = unet_pairs(*unet_structure(unet.tensors))
            for k in unet.tensors:
                self._direct(unet, k, "model.diffusion_model." + map_key(k, pairs))
        if transformer is not None:   # DiT denoisers keep diffusers names (not mapped yet)
            for k in transformer.tensors:
                self._direct(transformer, k, "model.diffusion_model." + k)
        if vae is not None:
            pairs = vae_pairs(*vae_structure(vae.tensors))
            for k, t in vae.tensors.items():
                new = "first_stage_model." + map_key(k, pairs)
                shape = t.shape
                if ".mid.attn_1." in new and len(shape) == 2 and new.endswith(".weight"):
                    shape = shape + (1, 1)        # linear -> 1x1 conv: same bytes
                self._direct(vae, k, new, shape)
        if te is not None:
            if any(k.startswith("text_model.encoder.layers.12.") for k in te.tensors):  # SD2: OpenCLIP ViT-H (23-24 layers)
                self._openclip(te, "cond_stage_model.model.")
            else:
                pre = "conditioner.embedders.0.transformer." if xl else "cond_stage_model.transformer."
                for k in te.tensors:
                    self._direct(te, k, pre + k)
        if te2 is not None:
            self._openclip(te2, "conditioner.embedders.1.model." if te is not None else "conditioner.embedders.0.model.")

    def _direct(self, src, key: str, new: str, shape=None) -> None:
        t = src.tensors[key]
        if new in self.tensors:
            log.warning("%s: %s maps to %s twice; keeping the first", self.root, key, new)
            return
        self.tensors[new] = TensorInfo(new, t.dtype, tuple(shape or t.shape), 0, t.nbytes)
        self._virt[new] = _Virtual([(src, key, t.numel)])

    def _openclip(self, src, prefix: str) -> None:
        qkv: dict[tuple[str, str], dict[str, str]] = {}
        for k, t in src.tensors.items():
            m = QKV.match(k)
            if m:
                qkv.setdefault((m.group(1), m.group(3)), {})[m.group(2)] = k
                continue
            if k == "text_projection.weight":
                new = prefix + "text_projection"
                self.tensors[new] = TensorInfo(new, t.dtype, (t.shape[1], t.shape[0]), 0, t.nbytes)
                self._virt[new] = _Virtual([(src, k, t.numel)], transpose=t.shape)
                continue
            for rx, tmpl in CLIP_TO_OPENCLIP:
                mm = re.match(rx, k)
                if mm:
                    self._direct(src, k, prefix + tmpl.format(*mm.groups()))
                    break
        for (layer, kind), parts in qkv.items():
            if set(parts) != {"q", "k", "v"}:
                raise BadFileError(f"text encoder layer {layer}: q/k/v projections incomplete", self.root)
            ts = [src.tensors[parts[x]] for x in "qkv"]
            if len({t.dtype for t in ts}) != 1:
                raise UnsupportedError(f"text encoder layer {layer}: q/k/v stored in different dtypes", self.root)
            new = f"{prefix}transformer.resblocks.{layer}.attn.in_proj_{kind}"
            shape = (sum(t.shape[0] for t in ts),) + tuple(ts[0].shape[1:])
            self.tensors[new] = TensorInfo(new, ts[0].dtype, shape, 0, sum(t.nbytes for t in ts))
            self._virt[new] = _Virtual([(src, t.key, t.numel) for t in ts])

    def read_elements(self, requests: list[tuple[str, int, int]]) -> list[bytes]:
        # plan: per exposed request, a list of (source, key, start, count) pieces
        plans, by_src = [], {}
        for key, start, count in requests:
            v = self._virt[key]
            pieces = []
            if v.transpose is not None:                  # exposed (C, R) = stored (R, C).T
                (R, C), (src, skey, _) = v.transpose, v.parts[0]
                for f in range(start, start + count):
                    c, r = divmod(f, R)
                    pieces.append((src, skey, r * C + c, 1))
            else:
                pos = start
                end = start + count
                base = 0
                for src, skey, n in v.parts:
                    lo, hi = max(pos, base), min(end, base + n)
                    if lo < hi:
                        pieces.append((src, skey, lo - base, hi - lo))
                    base += n
            plans.append(pieces)
            for src, skey, s, c in pieces:
                by_src.setdefault(id(src), (src, []))[1].append((skey, s, c))
        results = {}
        for sid, (src, reqs) in by_src.items():
            results[sid] = iter(src.read_elements(reqs))
        out = []
        for pieces in plans:
            out.append(b"".join(next(results[id(src)]) for src, _, _, _ in pieces))
        return out

    @property
    def bytes_read(self) -> int:
        return sum(f.bytes_read for f in self._files)

    @bytes_read.setter
    def bytes_read(self, v) -> None:
        pass

    def close(self) -> None:
        for f in getattr(self, "_files", []):
            f.close()
        self._files = []
