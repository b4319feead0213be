"""The fingerprints of a scan, and hashing the files that may be the same bytes.

``_fingerprints`` gives path -> Fingerprint (those read in this scan, the others loaded from the
store when first used); ``_confirm_same_bytes`` hashes the files whose size and sampled bytes
match another file's, before anything is called identical.
"""
from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor

from .. import identify as ident
from ..errors import FpError

log = logging.getLogger("fpcore.scan")


class _Fingerprints(Mapping):
    """path -> Fingerprint of every file that was identified, loaded from the store on first use
    (a rescan of an unchanged folder loads only those it compares), else read from the file."""

    def __init__(self, reports: dict, store, read: dict | None = None):
        from ..store import stat_identity
        self._store = store
        self._fps: dict = {p: fp for p, fp in (read or {}).items() if not reports.get(p, {}).get("error")}
        self.keys_by_path: dict[str, str | None] = {}
        for path, rep in reports.items():
            if rep.get("error"):
                continue
            key = rep.get("sha256")
            if store is not None and not key and not os.path.isdir(path):
                try:
                    rec = store.file_record(stat_identity(path))
                    key = rec.key if rec is not None else None
                except OSError:
                    key = None
            self.keys_by_path[path] = key

    def __getitem__(self, path: str):
        if path in self._fps:
            return self._fps[path]
        if path not in self.keys_by_path:
            raise KeyError(path)
        key = self.keys_by_path[path]
        got = self._store.get_fingerprint(key) if self._store is not None and key else None
        if got:
            fp = got[0]
        else:
            try:
                fp = ident.fingerprint_path(path)[0]
            except (FpError, OSError) as e:
                log.warning("%s: cannot read the fingerprint again: %s", path, e)
                del self.keys_by_path[path]
                raise KeyError(path) from None
        self._fps[path] = fp
        return fp

    def __contains__(self, path) -> bool:
        return path in self.keys_by_path

    def __iter__(self):
        return iter(list(self.keys_by_path))

    def __len__(self) -> int:
        return len(self.keys_by_path)


def _fingerprints(reports: dict, store, read: dict | None = None) -> _Fingerprints:
    """path -> Fingerprint for every file that was identified: those ``read`` in this scan, the
    others loaded when first used."""
    return _Fingerprints(reports, store, read)


def _confirm_same_bytes(reports: dict, sizes: dict, fps, db, store, workers: int, phase=None) -> None:
    """Hash the files that may be byte-identical to another file of the folder (same size, same
    sampled bytes of the same tensors) and have no hash yet, so that "identical" and the bytes
    offered as reclaimable rest on compared bytes. A file that changed since its fingerprint is
    reported (its report becomes an error) and nothing is cached for it."""
    groups: dict[tuple, list[str]] = {}
    for p, rep in reports.items():
        if rep.get("error") or p not in fps or os.path.isdir(p):
            continue
        key = fps.keys_by_path.get(p) if hasattr(fps, "keys_by_path") else None
        try:
            digest = (store.sample_digest(key) if store is not None and key else None) or fps[p].sample_digest()
        except KeyError:
            continue
        groups.setdefault((sizes.get(p, 0), digest), []).append(p)
    todo = [p for ps in groups.values() if len(ps) > 1 for p in ps if not reports[p].get("sha256")]
    if not todo:
        return
    total = sum(sizes.get(p, 0) for p in todo)
    done = {"bytes": 0}
    if phase:
        phase("hashing", 0, total)

    def confirm(path: str) -> dict:
        try:
            rep = ident.identify(path, db, store=store, hash_policy="always")
        except FpError as e:
            rep = ident.error_report(path, e)
        except OSError as e:
            rep = ident.error_report(path, FpError(f"{e.strerror or e}", path))
        done["bytes"] += sizes.get(path, 0)
        if phase:
            phase("hashing", done["bytes"], total)
        return rep

    with ThreadPoolExecutor(max(1, workers)) as ex:
        for path, rep in zip(todo, ex.map(confirm, todo)):
            if rep.get("error"):
                fps.keys_by_path.pop(path, None)
            else:
                rep = dict(rep, stats=reports[path].get("stats"))   # what the first pass cost, plus the hash
                fps.keys_by_path[path] = rep["sha256"]
            reports[path] = rep
