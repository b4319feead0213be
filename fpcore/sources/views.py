"""Sources made of other sources' tensors under new names.

A ``VirtualSource`` exposes tensors built from stored ones: renamed (same bytes),
reshaped (a VAE attention linear (c, c) seen as the 1x1 conv (c, c, 1, 1) of the single
file), concatenated (open_clip's ``in_proj_weight`` is the HF q, k and v projections one
after the other) or transposed (open_clip's ``text_projection`` is the HF linear weight,
transposed). Reads are planned per stored source, so each underlying file is still read
in one batch. The key names come from ``fpcore.sources.keymaps``; this module only builds and
reads the views.

``OpenClipView`` shows a standalone HF-layout CLIP-G/H file (``clip_g.safetensors``,
SDXL's ``text_encoder_2``) in the open_clip layout of a checkpoint, so it fingerprints
like the CLIP-G inside a checkpoint. CLIP-L keeps the HF layout everywhere.
"""
from __future__ import annotations

import logging

from . import keymaps
from ..errors import BadFileError, UnsupportedError
from .base import Source, TensorInfo

log = logging.getLogger(__name__)


class _Virtual:
    """How an exposed tensor is made of stored ones: ``parts`` (source, key, numel) concatenated
    in flat order, optionally transposed (``transpose`` = the stored 2-D shape)."""

    __slots__ = ("parts", "transpose")

    def __init__(self, parts, transpose: tuple[int, int] | None = None):
        self.parts = parts
        self.transpose = transpose


class VirtualSource(Source):
    """Base of sources whose tensors are views of tensors held by other sources (``_files``)."""

    def __init__(self, path: str, files: list[Source] | None = None):
        super().__init__(path)
        self._files: list[Source] = list(files or [])
        self._virt: dict[str, _Virtual] = {}

    # -- building views ------------------------------------------------------------------
    def add_direct(self, src: Source, key: str, new: str, shape=None) -> None:
        """Expose ``src``'s tensor ``key`` as ``new`` (same bytes; ``shape`` may reshape it)."""
        t = src.tensors[key]
        if new in self.tensors:
            log.warning("%s: %s maps to %s twice; keeping the first", self.path, key, new)
            return
        self.tensors[new] = TensorInfo(new, t.dtype, tuple(shape or t.shape), 0, t.nbytes)
        self._virt[new] = _Virtual([(src, key, t.numel)])

    def add_openclip(self, src: Source, prefix: str) -> None:
        """Expose an HF-layout CLIP text model held by ``src`` under open_clip names after ``prefix``."""
        qkv: dict[tuple[str, str], dict[str, str]] = {}
        for k, t in src.tensors.items():
            m = keymaps.QKV.match(k)
            if m:
                qkv.setdefault((m.group(1), m.group(3)), {})[m.group(2)] = k
                continue
            if k == "text_projection.weight":
                new = prefix + "text_projection"
                if len(t.shape) != 2:
                    raise BadFileError(f"text_projection.weight has shape {t.shape}, expected 2-D", self.path)
                self.tensors[new] = TensorInfo(new, t.dtype, (t.shape[1], t.shape[0]), 0, t.nbytes)
                self._virt[new] = _Virtual([(src, k, t.numel)], transpose=t.shape)
                continue
            inner = keymaps.openclip_key(k)
            if inner is not None:
                self.add_direct(src, k, prefix + inner)
        for (layer, kind), parts in qkv.items():
            if set(parts) != {"q", "k", "v"}:
                raise BadFileError(f"text encoder layer {layer}: q/k/v projections incomplete", self.path)
            ts = [src.tensors[parts[x]] for x in "qkv"]
            if len({t.dtype for t in ts}) != 1:
                raise UnsupportedError(f"text encoder layer {layer}: q/k/v stored in different dtypes", self.path)
            new = f"{prefix}transformer.resblocks.{layer}.attn.in_proj_{kind}"
            shape = (sum(t.shape[0] for t in ts),) + tuple(ts[0].shape[1:])
            self.tensors[new] = TensorInfo(new, ts[0].dtype, shape, 0, sum(t.nbytes for t in ts))
            self._virt[new] = _Virtual([(src, t.key, t.numel) for t in ts])

    # -- reading -------------------------------------------------------------------------
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
                end = start + count
                base = 0
                for src, skey, n in v.parts:
                    lo, hi = max(start, base), min(end, base + n)
                    if lo < hi:
                        pieces.append((src, skey, lo - base, hi - lo))
                    base += n
            plans.append(pieces)
            for src, skey, s, c in pieces:
                by_src.setdefault(id(src), (src, []))[1].append((skey, s, c))
        results = {sid: iter(src.read_elements(reqs)) for sid, (src, reqs) in by_src.items()}
        return [b"".join(next(results[id(src)]) for src, _, _, _ in pieces) for pieces in plans]

    @property
    def bytes_read(self) -> int:
        return sum(f.bytes_read for f in self._files)

    def close(self) -> None:
        for f in getattr(self, "_files", []):
            f.close()
        self._files = []


class OpenClipView(VirtualSource):
    """A bare HF-layout CLIP-G/H file under its open_clip key names (other keys pass through)."""

    def __init__(self, src: Source, prefix: str):
        super().__init__(src.path, [src])
        self.format = src.format
        self.size = src.size
        self.metadata = dict(src.metadata)
        self.identity = src.identity
        self.add_openclip(src, prefix)
        for k in src.tensors:
            if not k.startswith("text_model.") and k != "text_projection.weight" and k not in self.tensors:
                self.add_direct(src, k, k)


def wrap(src: Source) -> Source:
    """``src`` itself, or a view of it in the open_clip layout when it is a bare HF CLIP-G/H."""
    if "text_model.embeddings.token_embedding.weight" not in src.tensors:
        return src
    prefix = keymaps.OPENCLIP_BY_LAYERS.get(keymaps.hf_clip_layers(src.tensors))
    return OpenClipView(src, prefix) if prefix else src
