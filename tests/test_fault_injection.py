"""Faults: kill -9 during a scan, a full disk under the store and the sidecars, and four
processes scanning overlapping folders against one store."""
from __future__ import annotations

import errno
import hashlib
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
from fpcore import synth, tags
from fpcore.errors import BadFileError
from fpcore.refs import RefDB
from fpcore.store import DB_NAME, Store

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def models(tmp_path_factory, lineage):
    d = tmp_path_factory.mktemp("fault_models")
    for i in range(10):
        synth.write_safetensors(d / f"m{i}.safetensors", synth.finetune(lineage["Base"], 0.01 * (i + 1), 50 + i), "F16")
    (d / "m0.json").write_text(json.dumps({"notes": "mine"}))
    return d


def _scan(folder, cache, *extra, wait=True):
    env = dict(os.environ, FPCORE_CACHE=str(cache), FPCORE_REFS=str(cache) + "-refs")
    cmd = [sys.executable, "-m", "fpcore", "scan", str(folder), "--json", *extra]
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


@pytest.mark.parametrize("delay", [0.4, 0.8, 1.2])   # the whole scan takes about 2 s here
def test_kill_9_during_scan(models, tmp_path, delay):
    import shutil
    folder = tmp_path / "m"
    shutil.copytree(models, folder)
    cache = tmp_path / "cache"
    p = _scan(folder, cache, "--write-tags", wait=False)
    time.sleep(delay)
    p.send_signal(signal.SIGKILL)
    p.communicate()
    assert p.returncode == -signal.SIGKILL                    # killed while it was still working
    _store_ok(cache)
    _sidecars_ok(folder)
    code, out, err = _scan(folder, cache, "--write-tags")     # the rerun resumes and completes
    assert code == 0, err
    res = json.loads(out)
    assert len(res["reports"]) == 10 and all(r["error"] is None for r in res["reports"])
    _store_ok(cache)
    _sidecars_ok(folder)
    assert all((folder / f"m{i}.json").exists() for i in range(10))
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


def test_four_processes_scan_overlapping_folders(models, tmp_path):
    folders = []
    for j, members in enumerate([range(0, 5), range(3, 8), range(0, 10), range(6, 10)]):
        d = tmp_path / f"f{j}"
        d.mkdir()
        for i in members:
            os.link(models / f"m{i}.safetensors", d / f"m{i}.safetensors")
        folders.append(d)
    cache = tmp_path / "shared"
    procs = [_scan(d, cache, wait=False) for d in folders]
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
        assert all(r["error"] is None for r in json.loads(out)["reports"])
    _store_ok(cache)
    con = sqlite3.connect(cache / DB_NAME)
    rows = con.execute("SELECT path, sha256 FROM files").fetchall()
    assert len(rows) == 5 + 5 + 10 + 4                   # one row per path, none lost
    for path, sha in rows:
        assert hashlib.sha256(Path(path).read_bytes()).hexdigest() == sha
