"""SHA-256s a host already computed, read from its own cache file (no host import).

A1111 / Forge (``modules/hashes.py``, ``modules/cache.py``) keep the SHA-256 of every
checkpoint they hashed in ``cache.json`` at the web UI's data dir (the install folder unless
``--data-dir``; ``SD_WEBUI_CACHE_FILE`` overrides the file)::

    {"hashes": {"checkpoint/<name>": {"mtime": <os.path.getmtime at hashing>, "sha256": "<64 hex>"}, ...}, ...}

``<name>`` is the file's path relative to ``models/Stable-diffusion`` (or ``--ckpt-dir``), with the
OS separator. The host trusts an entry while the file's mtime is not newer than the recorded
one, and so does this reader. The cache file is found by walking up from the model file to a
folder holding both ``cache.json`` and ``models/Stable-diffusion``.
"""
from __future__ import annotations

import json
import logging
import os
import re
import threading
from functools import lru_cache

log = logging.getLogger(__name__)

CACHE_NAME = "cache.json"
#: where A1111 keeps checkpoints, relative to its data dir
CHECKPOINT_DIR = os.path.join("models", "Stable-diffusion")
#: the section and title prefix of checkpoint hashes in cache.json
SECTION, TITLE_PREFIX = "hashes", "checkpoint/"
#: cache.json files larger than this are not read (a real one holds a few hundred bytes per model)
MAX_CACHE_BYTES = 64_000_000
#: how far up from a model file the data dir is looked for
MAX_LEVELS = 8
_SHA = re.compile(r"^[0-9a-fA-F]{64}$")
_lock = threading.Lock()
_roots: dict[str, str | None] = {}
#: (cache.json, checkpoint folder) pairs a running host told us about (``register``), tried first
_registered: list[tuple[str, str]] = []


def register(cache_file: str | os.PathLike, checkpoint_dirs) -> None:
    """Called by the A1111/Forge glue: its cache.json and the folders its checkpoint titles are
    relative to (``--ckpt-dir`` first, then models/Stable-diffusion), wherever they are."""
    pairs = [(os.path.abspath(os.fspath(cache_file)), os.path.abspath(os.fspath(d))) for d in checkpoint_dirs if d]
    with _lock:
        _registered[:] = pairs + [x for x in _registered if x not in pairs]


def _data_dir_of(folder: str) -> str | None:
    """The A1111 data dir above ``folder`` (holding cache.json and models/Stable-diffusion), or None."""
    with _lock:
        if folder in _roots:
            return _roots[folder]
    found, d = None, folder
    for _ in range(MAX_LEVELS):
        if os.path.isfile(os.path.join(d, CACHE_NAME)) and os.path.isdir(os.path.join(d, CHECKPOINT_DIR)):
            found = d
            break
        up = os.path.dirname(d)
        if up == d:
            break
        d = up
    with _lock:
        _roots[folder] = found
    return found


@lru_cache(maxsize=8)
def _load(path: str, mtime_ns: int, size: int) -> dict:
    """The checkpoint section of one cache.json (keyed by file identity, so an update is re-read)."""
    if size > MAX_CACHE_BYTES:
        log.info("%s: %d bytes, larger than a host hash cache; not read", path, size)
        return {}
    try:
        with open(path, encoding="utf8") as f:
            data = json.load(f)
    except (OSError, ValueError, RecursionError) as e:
        log.info("%s: not a readable host hash cache (%s)", path, e)
        return {}
    section = data.get(SECTION) if isinstance(data, dict) else None
    return section if isinstance(section, dict) else {}


def entries(cache_file: str) -> dict:
    """The ``hashes`` section of an A1111 cache.json ({} if unreadable)."""
    try:
        st = os.stat(cache_file)
    except OSError:
        return {}
    return _load(os.path.abspath(cache_file), st.st_mtime_ns, st.st_size)


def lookup(cache_file: str, title: str, path: str) -> str | None:
    """A1111's check (``hashes.sha256_from_cache``): the entry's SHA-256 unless the file is newer."""
    e = entries(cache_file).get(title)
    if not isinstance(e, dict):
        return None
    sha, mtime = e.get("sha256"), e.get("mtime", 0)
    if not isinstance(sha, str) or not _SHA.match(sha) or not isinstance(mtime, (int, float)):
        return None
    try:
        if os.path.getmtime(path) > mtime:
            return None
    except OSError:
        return None
    return sha.lower()


def sha256_for(path: str | os.PathLike) -> str | None:
    """The SHA-256 A1111/Forge recorded for the checkpoint at ``path``, if it is in an A1111 models
    folder and unchanged since; else None. Never raises."""
    try:
        p = os.path.abspath(os.fspath(path))
        with _lock:
            registered = list(_registered)
        for cache_file, models in registered:
            for cand in dict.fromkeys((p, os.path.realpath(p))):
                name = os.path.relpath(cand, models)
                if not name.startswith(os.pardir):
                    sha = lookup(cache_file, TITLE_PREFIX + name, cand)
                    if sha:
                        return sha
        cache_file = os.environ.get("SD_WEBUI_CACHE_FILE")
        for cand in dict.fromkeys((p, os.path.realpath(p))):   # the folder as given, and resolved
            root = _data_dir_of(os.path.dirname(cand))
            if root is None:
                continue
            models = os.path.join(root, CHECKPOINT_DIR)
            name = os.path.relpath(cand, models)
            if name.startswith(os.pardir):
                continue
            sha = lookup(cache_file or os.path.join(root, CACHE_NAME), TITLE_PREFIX + name, cand)
            if sha:
                return sha
    except (OSError, ValueError) as e:
        log.debug("host hash cache for %s: %s", path, e)
    return None


def clear() -> None:
    """Forget found data dirs and parsed caches (tests; a long-running host after a move)."""
    with _lock:
        _roots.clear()
        _registered.clear()
    _load.cache_clear()
