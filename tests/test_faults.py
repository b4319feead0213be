"""Faults: kill -9 during a scan, a full disk under the store and the sidecars (simulated, and a
real full tmpfs), a read-only file system under the cache, a file rewritten in place while it
is hashed, and four processes scanning overlapping folders against one store."""
from __future__ import annotations

import contextlib
import errno
import hashlib
import re
import shutil
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from fpcore import identify as ident
import testkit
from fpcore.scan import tags
from fpcore.errors import BadFileError
from fpcore.refs.library import RefDB
from fpcore.store import DB_NAME, Store

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def models(tmp_path_factory, lineage):
    d = tmp_path_factory.mktemp("fault_models")
    for i in range(10):
        testkit.write_safetensors(d / f"m{i}.safetensors", testkit.finetune(lineage["Base"], 0.01 * (i + 1), 50 + i), "F16")
    (d / "m0.json").write_text(json.dumps({"notes": "mine"}))
    return d


def _scan(folder, cache, *extra, wait=True, stop_at=None):
    """``fpcore scan``; ``stop_at`` (marker, what, n): it stops itself there (tests/_killpoint.py)."""
    env = dict(os.environ, FPCORE_CACHE=str(cache), FPCORE_REFS=str(cache) + "-refs")
    head = [sys.executable, "-m", "fpcore"] if stop_at is None else \
        [sys.executable, str(ROOT / "tests" / "_killpoint.py"), *map(str, stop_at), "--"]
    cmd = [*head, "scan", str(folder), "--json", *extra]
    p = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if not wait:
        return p
    out, err = p.communicate(timeout=300)
    return p.returncode, out, err


def _store_ok(cache) -> None:
    db = Path(cache) / DB_NAME
    if db.exists():
        con = sqlite3.connect(db)
        assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        con.close()


def _sidecars_ok(folder) -> None:
    for sc in Path(folder).glob("*.json"):
        json.loads(sc.read_text())                   # never half-written
    assert json.loads((Path(folder) / "m0.json").read_text())["notes"] == "mine"


def _count(cache, table: str) -> int:
    try:
        con = sqlite3.connect(f"file:{Path(cache) / DB_NAME}?mode=ro", uri=True, timeout=0.05)
        try:
            return con.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
        finally:
            con.close()
    except sqlite3.Error:                               # not created yet, or mid-checkpoint
        return 0


def _only_expected_files(folder) -> None:
    """Models, their sidecars and one-time backups; temp files of an interrupted atomic write
    may remain; nothing else (no partial sidecar under its real name: they all parse)."""
    for f in Path(folder).iterdir():
        ok = (re.fullmatch(r"m\d+\.(safetensors|json|json\.bak)", f.name)
              or re.fullmatch(r"\.m\d+\.json(\.bak)?\..+\.tmp", f.name))
        assert ok, f"unexpected file after the kill: {f.name}"


# kill points by progress, not by time: the scan stops itself as soon as the store holds this
# many files (0: at once, before anything is written), or reports, or new sidecars, and is
# killed there (tests/_killpoint.py): it cannot finish first, however busy the machine
KILL_POINTS = [("files", 0), ("files", 3), ("reports", 8), ("sidecars", 1)]


@pytest.mark.parametrize("table,n", KILL_POINTS, ids=[f"{t}>={n}" for t, n in KILL_POINTS])
def test_kill_9_during_scan(models, tmp_path, table, n):
    folder = tmp_path / "m"
    shutil.copytree(models, folder)
    cache = tmp_path / "cache"
    marker = tmp_path / "stopped"
    p = _scan(folder, cache, "--write-tags", wait=False, stop_at=(marker, table, n))
    deadline = time.time() + 120
    while time.time() < deadline and p.poll() is None and not marker.exists():
        time.sleep(0.01)
    assert marker.exists(), f"the scan ended (or hung) before {table} >= {n}: {p.poll()}"
    p.send_signal(signal.SIGKILL)
    p.communicate()
    assert p.returncode == -signal.SIGKILL                    # killed while it was still working
    if n:                                                     # the kill point was reached
        got = len([f for f in folder.glob("m*.json") if f.name != "m0.json"]) if table == "sidecars" \
            else _count(cache, table)
        assert got >= n, (table, got)
    _store_ok(cache)
    _sidecars_ok(folder)
    _only_expected_files(folder)
    done = set()                                              # contents answered before the kill
    if (cache / DB_NAME).exists():
        con = sqlite3.connect(cache / DB_NAME)
        keys = {r[0] for r in con.execute("SELECT key FROM reports WHERE refs_token NOT LIKE 'peers:%'")}
        done = {p for p, k in con.execute("SELECT path, key FROM files") if k in keys}
        con.close()
    code, out, err = _scan(folder, cache, "--write-tags")     # the rerun resumes and completes
    assert code == 0, err
    res = json.loads(out)
    assert len(res["reports"]) == 10 and all(r["error"] is None for r in res["reports"])
    for r in res["reports"]:                                  # work done before the kill is reused
        if os.path.realpath(r["path"]) in done:
            assert r["stats"].get("cached") == "report", r["path"]
    _store_ok(cache)
    _sidecars_ok(folder)
    _only_expected_files(folder)
    assert all(json.loads((folder / f"m{i}.json").read_text())["fingerprint_version"] for i in range(10))
    code, out, _ = _scan(folder, cache)
    assert all(r["stats"].get("cached") == "report" for r in json.loads(out)["reports"])


def test_disk_full_while_writing_a_sidecar(models, tmp_path, monkeypatch):
    model = tmp_path / "m.safetensors"
    model.write_bytes((models / "m1.safetensors").read_bytes())
    sc = tmp_path / "m.json"
    sc.write_text(json.dumps({"notes": "keep"}))
    real_fsync = os.fsync

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(BadFileError, match="No space left"):
        tags.write(model, {"base_model": "X"})
    monkeypatch.setattr(os, "fsync", real_fsync)
    assert json.loads(sc.read_text()) == {"notes": "keep"}              # the original is intact
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]  # and no temp file left


def test_disk_full_under_the_store(models, tmp_path, caplog):
    db = RefDB(tmp_path / "r", builtin_dir=tmp_path / "n")
    store = Store(tmp_path / "c")
    store._con.execute("PRAGMA max_page_count = 40")       # a few hundred KB: the fingerprint will not fit
    rep = ident.identify(models / "m2.safetensors", db, store=store)
    assert rep["error"] is None and rep["verdict"]["relation"] == "unknown"
    assert "full" in caplog.text
    _store_ok(tmp_path / "c")


MEMBERS = [range(0, 5), range(3, 8), range(0, 10), range(6, 10)]   # models in each of four folders


def test_four_processes_scan_overlapping_folders(models, tmp_path):
    folders = []
    for j, members in enumerate(MEMBERS):
        d = tmp_path / f"f{j}"
        d.mkdir()
        for i in members:
            os.link(models / f"m{i}.safetensors", d / f"m{i}.safetensors")
        folders.append(d)
    cache = tmp_path / "shared"
    procs = [_scan(d, cache, "--hash", wait=False) for d in folders]    # every file hashed, all at once
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
        assert all(r["error"] is None for r in json.loads(out)["reports"])
    _store_ok(cache)
    con = sqlite3.connect(cache / DB_NAME)
    rows = con.execute("SELECT path, sha256 FROM files").fetchall()
    want = {str(d / f"m{i}.safetensors") for d, members in zip(folders, MEMBERS) for i in members}
    assert sorted(os.path.realpath(p) for p, _ in rows) == sorted(os.path.realpath(p) for p in want)
    truth = {f"m{i}.safetensors": hashlib.sha256((models / f"m{i}.safetensors").read_bytes()).hexdigest()
             for i in range(10)}
    assert {p: sha for p, sha in rows} == {p: truth[Path(p).name] for p, _ in rows}   # each the file's hash


# -- a real full disk and a real read-only file system (tmpfs; needs mount rights, else skipped) --------

@contextlib.contextmanager
def _tmpfs(path: Path, size: str):
    path.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True)
    if r.returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root): the simulated tests above cover this")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def test_real_full_disk_under_store_and_sidecars(models, tmp_path):
    """Models, sidecars and the store on one tmpfs with a few KB left: the scan finishes, every
    model is identified, the user's sidecar is intact, nothing half-written; after space is
    freed a rerun writes everything."""
    need = sum((models / f"m{i}.safetensors").stat().st_size for i in range(3)) // 1024 + 4096
    with _tmpfs(tmp_path / "fs", f"{need}k") as fs:
        folder = fs / "m"
        folder.mkdir()
        for i in range(3):
            shutil.copy(models / f"m{i}.safetensors", folder)
        shutil.copy(models / "m0.json", folder)
        cache = fs / "cache"
        free = shutil.disk_usage(fs).free
        filler = fs / "filler"
        with open(filler, "wb") as f:                  # fill it up: no room for a store or a sidecar
            try:
                f.write(b"\0" * free)
            except OSError:
                pass
        code, out, err = _scan(folder, cache, "--write-tags")
        assert code == 3 and "Traceback" not in err, err           # sidecars not written: exit 3, one line each
        assert err.count("cannot write sidecar: No space left on device") == 3
        assert "cannot use the fingerprint store" in err           # one warning, then no cache
        res = json.loads(out)
        assert [r["error"] for r in res["reports"]] == [None] * 3
        assert all("cannot write sidecar: No space left on device" in t["error"] for t in res["tags"]), res["tags"]
        _sidecars_ok(folder)
        assert not [f for f in folder.iterdir() if f.name.endswith(".tmp")]
        filler.unlink()
        _store_ok(cache)                               # (sqlite cannot even check it while the disk is full)
        code, out, err = _scan(folder, cache, "--write-tags")
        assert code == 0, err
        _sidecars_ok(folder)
        _store_ok(cache)
        assert all((folder / f"m{i}.json").exists() for i in range(3))


def test_real_read_only_cache(models, tmp_path):
    """The cache on a file system remounted read-only (root cannot write either): the store is
    used read-only (answers come from it), one warning, exit 0; a cache dir that does not exist
    there: works without a cache."""
    with _tmpfs(tmp_path / "fs", "8m") as fs:
        folder = tmp_path / "m"
        folder.mkdir()
        for i in range(2):
            os.link(models / f"m{i}.safetensors", folder / f"m{i}.safetensors")
        code, out, err = _scan(folder, fs / "cache")
        assert code == 0, err
        r = subprocess.run(["mount", "-o", "remount,ro", str(fs)], capture_output=True)
        if r.returncode != 0:
            pytest.skip("cannot remount read-only")
        code, out, err = _scan(folder, fs / "cache")
        assert code == 0 and "Traceback" not in err, err
        assert "read-only" in err
        assert all(r["stats"].get("cached") == "report" and r["error"] is None for r in json.loads(out)["reports"])
        code, out, err = _scan(folder, fs / "elsewhere")
        assert code == 0 and ("working without a cache" in err or "cannot create cache dir" in err), err
        assert all(r["error"] is None for r in json.loads(out)["reports"])


def test_rewritten_in_place_while_hashed(models, tmp_path):
    """Same size, same inode, mtime set back (cp --preserve=timestamps over the file): only the
    change time tells. Detected, and nothing is cached under the old content's hash."""
    from fpcore.sources.hashing import hash_file
    p = tmp_path / "m.safetensors"
    shutil.copy(models / "m1.safetensors", p)
    other = (models / "m2.safetensors").read_bytes()
    assert len(other) == p.stat().st_size
    done = []

    def rewrite(n, total):
        if not done:
            done.append(1)
            st = p.stat()
            with open(p, "r+b") as f:
                f.write(other)
            os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))
    with pytest.raises(BadFileError, match="changed while"):
        hash_file(p, progress=rewrite)
    shutil.copy(models / "m1.safetensors", p)
    done.clear()
    store = Store(tmp_path / "c")
    db = RefDB(tmp_path / "r", builtin_dir=tmp_path / "n")
    with pytest.raises(BadFileError, match="changed while"):
        ident.identify(p, db, store=store, progress=rewrite)
    assert store.info()["files"] == 0 and store.info()["fingerprints"] == 0
