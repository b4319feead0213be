"""PyTorch checkpoints (.ckpt / .pt / .pth / .bin) read without executing pickle code.

A torch zip checkpoint holds ``<name>/data.pkl`` (the object tree) and one stored
(uncompressed) zip entry ``<name>/data/<key>`` per storage. The pickle is loaded by a
restricted unpickler whose ``find_class`` knows only what rebuilding tensors needs and
maps each of those names to a harmless stand-in defined here; any other global
(``os.system``, ``builtins.eval``, ``subprocess.Popen`` ...) raises UnsafePickleError
before anything is called. torch is never imported: storages are intercepted by
``persistent_load`` and tensor elements are read straight from the zip entry.
"""
from __future__ import annotations

import io
import logging
import math
import os
import pickle
import struct
import zipfile
import zlib

import numpy as np

from .. import dtypes
from ..errors import BadFileError, HeaderError, UnsafePickleError, UnsupportedError
from .base import Source, TensorInfo, open_fd, pread

log = logging.getLogger(__name__)

#: data.pkl of a real checkpoint is a few MB; refuse anything absurd (zip bombs)
MAX_PICKLE_BYTES = 256 * 1024 * 1024
#: a legacy (non-zip) pickle is loaded whole into the unpickler: bound it
MAX_LEGACY_PICKLE_BYTES = 64 * 1024 * 1024

#: torch legacy storage class -> safetensors dtype
STORAGE_DTYPES = {
    "DoubleStorage": "F64", "FloatStorage": "F32", "HalfStorage": "F16", "BFloat16Storage": "BF16",
    "LongStorage": "I64", "IntStorage": "I32", "ShortStorage": "I16", "CharStorage": "I8",
    "ByteStorage": "U8", "BoolStorage": "BOOL",
}
#: torch dtype name -> safetensors dtype (torch.float16 etc. may appear as globals)
TORCH_DTYPES = dtypes.TORCH_NAMES


class _StorageType:
    def __init__(self, dtype: str):
        self.dtype = dtype


class _TorchDtype:
    def __init__(self, name: str):
        self.name = name


class _Storage:
    def __init__(self, key: str, dtype: str, numel: int):
        self.key, self.dtype, self.numel = key, dtype, numel


class _Tensor:
    def __init__(self, storage: _Storage, offset: int, shape: tuple, stride: tuple):
        self.storage, self.offset, self.shape, self.stride = storage, offset, shape, stride


class _Opaque:
    """Stand-in for harmless non-tensor objects (Lightning callbacks, numpy scalars):
    accepts any construction arguments and state, does nothing."""

    def __init__(self, *a, **k):
        pass

    def __setstate__(self, state):
        pass


def _rebuild_tensor_v2(storage, storage_offset, size, stride, *rest):
    if not isinstance(storage, _Storage):
        raise pickle.UnpicklingError("tensor rebuilt from something that is not a storage")
    return _Tensor(storage, int(storage_offset), tuple(int(s) for s in size), tuple(int(s) for s in stride))


def _rebuild_parameter(data, *rest):
    return data


def _rebuild_from_type_v2(func, new_type, args, state):
    if func not in (_rebuild_tensor_v2, _rebuild_parameter):
        raise pickle.UnpicklingError("refused _rebuild_from_type_v2 with an unknown function")
    return func(*args)


def _ordered_dict(*a):
    import collections
    return collections.OrderedDict(*a)


def _codecs_encode(obj, encoding="latin1"):
    if not isinstance(obj, str):
        raise pickle.UnpicklingError("_codecs.encode of a non-string")
    return obj.encode(encoding)


def _allowed(module: str, name: str):
    if module == "collections" and name == "OrderedDict":
        return _ordered_dict
    if module == "torch._utils" and name in ("_rebuild_tensor_v2", "_rebuild_tensor"):
        return _rebuild_tensor_v2
    if module == "torch._utils" and name in ("_rebuild_parameter", "_rebuild_parameter_with_state"):
        return _rebuild_parameter
    if module == "torch._tensor" and name == "_rebuild_from_type_v2":
        return _rebuild_from_type_v2
    if module == "torch" and name in ("Tensor", "nn.Parameter"):
        return _Opaque
    if module == "torch.nn.parameter" and name == "Parameter":
        return _Opaque
    if module == "torch" and name in STORAGE_DTYPES:
        return _StorageType(STORAGE_DTYPES[name])
    if module == "torch" and name in TORCH_DTYPES:
        return _TorchDtype(name)
    if module in ("torch.storage",) and name in ("UntypedStorage", "_UntypedStorage", "TypedStorage"):
        return _StorageType("U8")
    if module == "_codecs" and name == "encode":
        return _codecs_encode
    if module in ("numpy.core.multiarray", "numpy._core.multiarray") and name == "scalar":
        return _Opaque
    if module == "numpy" and name == "dtype":
        return _Opaque
    if module in ("builtins", "__builtin__") and name in ("set", "frozenset"):
        return set if name == "set" else frozenset
    if module.startswith("pytorch_lightning.") or module.startswith("lightning."):
        return _Opaque   # ModelCheckpoint callbacks in training checkpoints: state only
    return None


class RestrictedUnpickler(pickle.Unpickler):
    """Rebuilds tensors as lazy references and refuses every other global."""

    def __init__(self, file, path: str, storage_prefix: str = ""):
        super().__init__(file)
        self._path = path
        self._prefix = storage_prefix
        self.storages: dict[str, _Storage] = {}

    def find_class(self, module, name):
        obj = _allowed(module, name)
        if obj is None:
            raise UnsafePickleError(f"pickle refers to {module}.{name}, which is not needed to rebuild tensors; "
                                    f"refused without running it", self._path)
        return obj

    def persistent_load(self, pid):
        if not isinstance(pid, tuple) or not pid or pid[0] != "storage" or len(pid) < 5:
            raise pickle.UnpicklingError(f"unexpected persistent id {str(pid)[:60]}")
        stype, key, _location, numel = pid[1], str(pid[2]), pid[3], pid[4]
        if isinstance(stype, _TorchDtype):
            dt = TORCH_DTYPES[stype.name]
        elif isinstance(stype, _StorageType):
            dt = stype.dtype
        else:
            raise pickle.UnpicklingError("storage of unknown type")
        st = self.storages.get(key)
        if st is None:
            st = self.storages[key] = _Storage(key, dt, int(numel))
        return st


#: dicts nested deeper than this hold no tensors in any real checkpoint
MAX_NESTING = 64


def _flatten(obj, prefix: str, out: dict) -> None:
    """Without recursion, and a dict seen before is not entered again: a pickle can build
    a dict that contains itself, or nests thousands deep."""
    stack, seen = [(obj, prefix, 0)], set()
    while stack:
        o, pre, depth = stack.pop()
        if isinstance(o, _Tensor):
            out[pre[:-1]] = o
        elif isinstance(o, dict) and id(o) not in seen and depth <= MAX_NESTING:
            seen.add(id(o))
            stack.extend((v, f"{pre}{k}.", depth + 1) for k, v in reversed(list(o.items())))


def state_dict_of(obj) -> dict:
    """The tensors of a loaded checkpoint, nested dicts flattened with dots (A1111 style:
    a ``state_dict`` entry replaces the whole, so do ``model`` / ``module`` wrappers)."""
    if isinstance(obj, dict):
        for wrapper in ("state_dict", "model", "module"):
            inner = obj.get(wrapper)
            if isinstance(inner, dict) and not any(isinstance(v, _Tensor) for v in obj.values()):
                obj = inner
                break
    out: dict = {}
    _flatten(obj, "", out)
    return out


class CkptFile(Source):
    """A torch zip checkpoint, read lazily and safely."""

    format = "ckpt"

    def __init__(self, path: str | os.PathLike):
        super().__init__(os.fspath(path))
        p = self.path
        self._fd = -1
        self._fd, self.identity = open_fd(p)
        self.size = self.identity.size
        try:
            if zipfile.is_zipfile(p):
                self._open_zip()
            else:
                self._open_legacy()
        except BaseException:
            self.close()
            raise

    # -- zip checkpoints ----------------------------------------------------------------
    def _open_zip(self) -> None:
        p = self.path
        try:
            zf = zipfile.ZipFile(p)
        except (zipfile.BadZipFile, OSError, ValueError, NotImplementedError) as e:  # NotImplementedError: zip version
            raise BadFileError(f"damaged zip checkpoint ({e})", p) from None
        with zf:
            infos = {i.filename: i for i in zf.infolist()}
            pkl = [n for n in infos if n.endswith("/data.pkl") or n == "data.pkl"]
            if not pkl:
                raise UnsupportedError("zip file without data.pkl: not a torch checkpoint", p)
            pkl_name = sorted(pkl, key=len)[0]
            root = pkl_name[:-len("data.pkl")]
            pi = infos[pkl_name]
            if pi.file_size > MAX_PICKLE_BYTES:
                raise HeaderError(f"data.pkl is {pi.file_size} bytes, over the {MAX_PICKLE_BYTES}-byte limit", p)
            try:
                with zf.open(pi) as f:
                    raw = f.read(MAX_PICKLE_BYTES + 1)
            except (zipfile.BadZipFile, OSError, ValueError, EOFError, zlib.error) as e:
                raise BadFileError(f"cannot read data.pkl ({e})", p) from None
            except (NotImplementedError, RuntimeError) as e:   # unknown compression method; encrypted entry
                raise UnsupportedError(f"cannot read data.pkl ({e})", p) from None
            if len(raw) > MAX_PICKLE_BYTES:
                raise HeaderError(f"data.pkl expands past the {MAX_PICKLE_BYTES}-byte limit (zip bomb?)", p)
            up = RestrictedUnpickler(io.BytesIO(raw), p)
            obj = self._load(up)
            sd = state_dict_of(obj)
            self._entries: dict[str, tuple[int, int]] = {}   # storage key -> (data offset, length)
            for key in up.storages:
                info = infos.get(f"{root}data/{key}")
                if info is None:
                    raise HeaderError(f"storage {key} has no zip entry {root}data/{key}", p)
                if info.compress_type != zipfile.ZIP_STORED:
                    raise UnsupportedError(f"storage {key} is compressed; torch stores them uncompressed", p)
                self._entries[key] = (self._data_offset(info), info.file_size)
        self._build(sd)

    def _data_offset(self, info: zipfile.ZipInfo) -> int:
        hdr = pread(self._fd, 30, info.header_offset, self.path)
        if hdr[:4] != b"PK\x03\x04":
            raise HeaderError(f"bad local zip header for {info.filename}", self.path)
        n, m = struct.unpack("<HH", hdr[26:30])
        off = info.header_offset + 30 + n + m
        if off + info.file_size > self.size:
            raise HeaderError(f"zip entry {info.filename} runs past the end of the file (truncated?)", self.path)
        return off

    def _load(self, up: RestrictedUnpickler):
        try:
            return up.load()
        except UnsafePickleError:
            raise
        except (pickle.UnpicklingError, EOFError, AttributeError, TypeError, ValueError, IndexError, KeyError,
                RecursionError, MemoryError) as e:
            raise BadFileError(f"damaged or unsupported pickle ({type(e).__name__}: {str(e)[:80]})", self.path) from None

    def _build(self, sd: dict) -> None:
        p = self.path
        self._lazy: dict[str, _Tensor] = {}
        tensors = {}
        for key, t in sd.items():
            d = dtypes.DTYPES[t.storage.dtype]
            if t.storage.key not in self._entries:
                raise HeaderError(f"tensor {key!r}: storage {t.storage.key} is missing", p)
            base, length = self._entries[t.storage.key]
            numel = math.prod(t.shape)
            if numel and len(t.stride) != len(t.shape):
                raise HeaderError(f"tensor {key!r}: stride {t.stride} does not fit shape {t.shape}", p)
            last = t.offset + sum((s - 1) * st for s, st in zip(t.shape, t.stride)) if numel else t.offset - 1
            if t.offset < 0 or any(st < 0 for st in t.stride) or (last + 1) * d.itemsize > length:
                raise HeaderError(f"tensor {key!r}: shape {t.shape} / stride {t.stride} at element {t.offset} "
                                  f"runs past its {length}-byte storage", p)
            self._lazy[key] = t
            tensors[key] = TensorInfo(key, t.storage.dtype, t.shape, base + t.offset * d.itemsize, numel * d.itemsize)
        self.tensors = tensors

    # -- legacy (torch < 1.6) pickles ----------------------------------------------------
    def _open_legacy(self) -> None:
        p = self.path
        if self.size > MAX_LEGACY_PICKLE_BYTES:
            # the object tree of a legacy file comes first; refuse to guess where it ends
            head = pread(self._fd, min(self.size, 1 << 20), 0, p)
        else:
            head = pread(self._fd, self.size, 0, p)
        up = RestrictedUnpickler(io.BytesIO(head), p)
        first = self._load(up)   # a malicious pickle is refused here, before anything runs
        if isinstance(first, int) and first == 0x1950A86A20F9469CFC6C:
            raise UnsupportedError("legacy (torch < 1.6) checkpoint format is not supported; "
                                   "re-save it as .safetensors", p)
        raise UnsupportedError("not a torch checkpoint (no zip archive, no legacy magic number)", p)

    # -- reading --------------------------------------------------------------------------
    def read_elements(self, requests: list[tuple[str, int, int]]) -> list[bytes]:
        out = []
        for key, start, count in requests:
            t = self._lazy[key]
            info = self.tensors[key]
            item = dtypes.DTYPES[info.dtype].itemsize
            base = info.offset - t.offset * item          # start of the storage
            contiguous = _contiguous_stride(t.shape) == t.stride
            if contiguous or count == 0:
                b = pread(self._fd, count * item, info.offset + start * item, self.path)
                self._count(len(b))
            else:
                pos = _positions(t.shape, t.stride, start, count) + t.offset
                lo, hi = int(pos.min()), int(pos.max()) + 1
                blob = pread(self._fd, (hi - lo) * item, base + lo * item, self.path)
                self._count(len(blob))
                arr = np.frombuffer(blob, np.uint8).reshape(-1, item)
                b = arr[pos - lo].tobytes()
            out.append(b)
        return out

    def close(self) -> None:
        if getattr(self, "_fd", -1) >= 0:
            os.close(self._fd)
            self._fd = -1


def _contiguous_stride(shape: tuple) -> tuple:
    st, acc = [], 1
    for s in reversed(shape):
        st.append(acc)
        acc *= s
    return tuple(reversed(st))


def _positions(shape: tuple, stride: tuple, start: int, count: int) -> np.ndarray:
    """Storage element positions of flat (row-major) indices start .. start+count-1."""
    idx = np.arange(start, start + count, dtype=np.int64)
    pos = np.zeros(count, np.int64)
    for s, st in zip(reversed(shape), reversed(stride)):
        pos += (idx % s) * st
        idx //= s
    return pos
