"""Where fpcore keeps its data. Hosts may override these with FPCORE_REFS / FPCORE_CACHE."""
from __future__ import annotations

import os
import sys
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
#: the reference data that ships with fpcore (known_hashes.json, known_lineage.json, built-in
#: .fpref files): the repository's ``refs/`` folder in a clone or an editable install; inside
#: the package as ``fpcore/data/`` in a wheel (pyproject maps refs/ there)
PACKAGE_DATA = Path(__file__).resolve().parent / "data"
BUILTIN_REFS = PACKAGE_DATA if (PACKAGE_DATA / "known_hashes.json").is_file() else PROJECT_ROOT / "refs"


def _base(kind: str) -> Path:
    if sys.platform == "win32":
        return Path(os.environ.get("LOCALAPPDATA") or Path.home() / "AppData" / "Local") / "fpcore"
    if sys.platform == "darwin":
        return Path.home() / "Library" / ("Caches" if kind == "cache" else "Application Support") / "fpcore"
    env = "XDG_CACHE_HOME" if kind == "cache" else "XDG_DATA_HOME"
    default = Path.home() / (".cache" if kind == "cache" else ".local/share")
    return Path(os.environ.get(env) or default) / "fpcore"


def user_refs_dir() -> Path:
    return Path(os.environ.get("FPCORE_REFS") or _base("data") / "refs")


def cache_dir() -> Path:
    return Path(os.environ.get("FPCORE_CACHE") or _base("cache"))


def atomic_write(path: str | os.PathLike, data) -> None:
    """Write via a temp file in the same directory, fsync, then os.replace.

    ``data``: bytes, or a function that writes to the open file (large files).
    The new file keeps the permissions of the one it replaces (else 0644 less umask)."""
    import stat
    import tempfile
    path = Path(path)
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except OSError:
        umask = os.umask(0)
        os.umask(umask)
        mode = 0o644 & ~umask
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            if callable(data):
                data(f)
            else:
                f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
