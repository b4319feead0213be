"""Sources: every container fpcore reads, behind one interface (``base.Source``).

``open_source(path)`` opens any supported model: a safetensors file, a torch checkpoint
(.ckpt/.pt/.pth/.bin, read without running pickle code), a GGUF file, or a diffusers folder
(the folder itself or its model_index.json). Files are recognised by their first bytes,
then by extension, through the ``FORMATS`` table; the safetensors reader takes whatever no
other format claims, since its header check says precisely what is wrong.
``open_file`` is the raw opener (no views): what a diffusers folder uses for its parts.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable

from ..errors import BadFileError, HeaderError
from .base import MAX_HEADER_BYTES, FileIdentity, Source, TensorInfo, check_regular_file  # noqa: F401

#: extensions of torch checkpoints whose legacy (pre-zip) pickle starts with the protocol byte
TORCH_EXTS = (".ckpt", ".pt", ".pth", ".bin")
#: files a diffusers folder is recognised by, beside model_index.json
DIFFUSERS_MARKERS = ("model_index.json", "unet", "transformer", "vae")


def _ckpt(p):
    from .ckpt import CkptFile
    return CkptFile(p)


def _gguf(p):
    from .gguf import GGUFFile
    return GGUFFile(p)


def _bad_gguf(p):
    raise HeaderError("no GGUF magic number: not a GGUF file (truncated or renamed?)", p)


def _safetensors(p):
    from .safetensors import SafetensorsFile
    return SafetensorsFile(p)


@dataclass(frozen=True)
class Format:
    name: str
    claims: Callable[[bytes, str], bool]     # (first 4 bytes, lower-case extension) -> is it this format?
    open: Callable[[str], Source]
    views: bool = True                       # apply views (HF CLIP-G/H -> open_clip) to what it opens


#: file formats, first claim wins
FORMATS: list[Format] = [
    Format("gguf", lambda magic, ext: magic == b"GGUF", _gguf, views=False),
    Format("ckpt", lambda magic, ext: magic == b"PK\x03\x04" or (ext in TORCH_EXTS and magic[:1] == b"\x80"), _ckpt),
    Format("gguf-renamed", lambda magic, ext: ext == ".gguf", _bad_gguf),
    Format("safetensors", lambda magic, ext: True, _safetensors),
]


def is_diffusers_folder(p: str) -> bool:
    return os.path.basename(p) == "model_index.json" or (
        os.path.isdir(p) and any(os.path.exists(os.path.join(p, n)) for n in DIFFUSERS_MARKERS))


def _format_of(p: str) -> Format:
    check_regular_file(p)
    try:
        with open(p, "rb") as f:
            magic = f.read(4)
    except OSError as e:
        raise BadFileError(f"cannot open: {e.strerror or e}", p) from None
    ext = os.path.splitext(p)[1].lower()
    return next(f for f in FORMATS if f.claims(magic, ext))


def open_file(path: str | os.PathLike) -> Source:
    """Open one model file as it is stored (no views)."""
    p = os.fspath(path)
    return _format_of(p).open(p)


def is_url(path) -> bool:
    """Whether ``path`` is a URL (``https://``, ``hf://``, ``s3://`` ...) rather than a local path."""
    if not (isinstance(path, str) and "://" in path):
        return False   # a local path: the URL machinery (requests included) stays unimported
    from .remote import is_url as _is_url
    return _is_url(path)


def open_source(path: str | os.PathLike, remote=None) -> Source:
    """Open a model of any supported format, a file, a diffusers folder or a URL (read by
    range requests; ``remote``: a ``remote.RemoteOptions``), as the fingerprint sees it
    (standalone HF-layout CLIP-G/H files shown in their checkpoint layout)."""
    p = os.fspath(path)
    if is_url(p):
        from .remote import open_url
        src = open_url(p, remote)
    elif is_diffusers_folder(p):
        from .diffusers import DiffusersFolder
        return DiffusersFolder(p, open_file)
    else:
        fmt = _format_of(p)
        src = fmt.open(p)
        if not fmt.views:
            return src
    from .views import wrap
    try:
        return wrap(src)
    except BaseException:
        src.close()
        raise
