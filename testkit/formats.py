"""Other containers: torch zip checkpoints (written without torch), GGUF; open_clip -> HF CLIP names.
Diffusers folders are written by testkit.diffusers, from diffusers' own renaming tables."""
from __future__ import annotations

import os
import pickle
import zipfile
from typing import Mapping

import numpy as np

from fpcore.paths import atomic_write

from .weights import convert

_TORCH_STORAGE = {"F64": "DoubleStorage", "F32": "FloatStorage", "F16": "HalfStorage", "BF16": "BFloat16Storage",
                  "I64": "LongStorage", "I32": "IntStorage"}


def _pk(obj) -> bytes:
    """Pickle opcodes of a primitive (str, int, bool, tuple of those), without PROTO/STOP."""
    return pickle.dumps(obj, protocol=2)[2:-1]


def _pk_global(module: str, name: str) -> bytes:
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def torch_pickle(entries: list[tuple[str, str, tuple[int, ...], str, int, tuple[int, ...]]],
                 wrap: str | None = "state_dict", extra: Mapping | None = None) -> bytes:
    """data.pkl of a torch checkpoint, written opcode by opcode (no torch needed).

    entries: (key, dtype, shape, storage key, storage numel, stride). ``wrap`` nests the
    state dict under that key (as Lightning/A1111 checkpoints do); ``extra`` adds
    primitive top-level entries (e.g. ``global_step``)."""
    out = bytearray(b"\x80\x02")
    od = _pk_global("collections", "OrderedDict") + b")R"
    if wrap:
        out += b"}" + _pk(wrap)
    out += od + b"("
    for key, dt, shape, skey, numel, stride in entries:
        out += _pk(key)
        out += _pk_global("torch._utils", "_rebuild_tensor_v2") + b"("
        out += b"(" + _pk("storage") + _pk_global("torch", _TORCH_STORAGE[dt]) + _pk(skey) + _pk("cpu") \
            + _pk(numel) + b"tQ"                                   # TUPLE, BINPERSID
        out += _pk(0) + _pk(tuple(shape)) + _pk(tuple(stride)) + _pk(False) + od + b"tR"
    out += b"u"                                                       # SETITEMS
    if wrap:
        out += b"s"                                                   # SETITEM wrap -> state dict
        for k, v in (extra or {}).items():
            out += _pk(k) + _pk(v) + b"s"
    out += b"."
    return bytes(out)


def write_torch_ckpt(path, tensors: Mapping[str, np.ndarray], dtype: str = "F16", wrap: str | None = "state_dict",
                     transpose_2d: bool = False) -> None:
    """Write ``tensors`` in the torch zip checkpoint layout (``archive/data.pkl`` plus one
    stored ``archive/data/<n>`` entry per tensor), readable by ``torch.load``.
    ``transpose_2d`` stores 2-D tensors transposed with a non-contiguous stride."""
    entries, blobs = [], []
    for i, (k, a) in enumerate(tensors.items()):
        a = np.asarray(a)
        is_int = np.issubdtype(a.dtype, np.integer)
        dt = "I64" if is_int else dtype
        c = convert(a, dt)
        stride = tuple(int(s) // c.itemsize for s in c.strides) if c.ndim else ()
        if transpose_2d and c.ndim == 2:
            stored = np.ascontiguousarray(c.T)
            stride = (1, c.shape[0])
            c_bytes = stored.tobytes()
        else:
            c_bytes = c.tobytes()
        entries.append((k, dt, c.shape, str(i), c.size, stride))
        blobs.append((str(i), c_bytes))
    pkl = torch_pickle(entries, wrap)

    def _w(f):
        with zipfile.ZipFile(f, "w", zipfile.ZIP_STORED) as z:
            z.writestr("archive/data.pkl", pkl)
            z.writestr("archive/byteorder", "little")
            for name, b in blobs:
                z.writestr(f"archive/data/{name}", b)
            z.writestr("archive/version", "3\n")

    atomic_write(path, _w)


def openclip_to_hf(inner: str, v: np.ndarray) -> dict[str, np.ndarray]:
    import re as _re
    m = _re.match(r"^transformer\.resblocks\.(\d+)\.(.*)$", inner)
    if inner == "token_embedding.weight":
        return {"text_model.embeddings.token_embedding.weight": v}
    if inner == "positional_embedding":
        return {"text_model.embeddings.position_embedding.weight": v}
    if inner == "text_projection":
        return {"text_projection.weight": np.ascontiguousarray(v.T)}
    if inner.startswith("ln_final."):
        return {"text_model.final_layer_norm." + inner.split(".", 1)[1]: v}
    if m:
        i, rest = m.groups()
        p = f"text_model.encoder.layers.{i}."
        if rest.startswith("attn.in_proj_"):
            kind = rest[len("attn.in_proj_"):]
            q, k_, v_ = np.split(v, 3, axis=0)
            return {f"{p}self_attn.q_proj.{kind}": q, f"{p}self_attn.k_proj.{kind}": k_,
                    f"{p}self_attn.v_proj.{kind}": v_}
        for a, b in (("attn.out_proj.", "self_attn.out_proj."), ("ln_1.", "layer_norm1."), ("ln_2.", "layer_norm2."),
                     ("mlp.c_fc.", "mlp.fc1."), ("mlp.c_proj.", "mlp.fc2.")):
            if rest.startswith(a):
                return {p + b + rest[len(a):]: v}
    return {}   # logit_scale and other open_clip-only entries have no HF counterpart


def write_gguf(path, tensors: Mapping[str, np.ndarray], quant: str = "Q8_0", arch: str = "sd1") -> None:
    """Write ``tensors`` as GGUF the way ComfyUI-GGUF does: original key names, tensors of
    2+ dims whose last dim fits the quant block quantized, the rest kept as F16/F32."""
    import gguf  # the optional dependency of the GGUF reader
    qt = gguf.GGMLQuantizationType[quant]
    bs = gguf.GGML_QUANT_SIZES[qt][0]
    w = gguf.GGUFWriter(os.fspath(path), arch)
    for k, a in tensors.items():
        a = np.asarray(a)
        if not np.issubdtype(a.dtype, np.floating):
            w.add_tensor(k, a.astype(np.int32))
        elif a.ndim >= 2 and a.shape[-1] % bs == 0:
            q = gguf.quants.quantize(a.astype(np.float32), qt)
            w.add_tensor(k, q, raw_shape=q.shape, raw_dtype=qt)
        else:
            w.add_tensor(k, a.astype(np.float16))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
