"""The shared store: hashes, cache hits, concurrency, corruption, read-only, files changing."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from fpcore import identify as ident
import testkit
from fpcore.refs import known
from fpcore.errors import BadFileError
from fpcore.sources.hashing import hash_file
from fpcore.refs.library import RefDB
from fpcore.store import DB_NAME, Store

ROOT = Path(__file__).resolve().parent.parent


def test_hashes_match_civitai_and_a1111_definitions(zoo_dir):
    p = zoo_dir / "Base.safetensors"
    data = p.read_bytes()
    h = hash_file(p)
    assert h.sha256 == hashlib.sha256(data).hexdigest() and h.autov2 == h.sha256[:10]
    n = int.from_bytes(data[:8], "little")
    assert h.autov3 == hashlib.sha256(data[8 + n:]).hexdigest()[:12]


def test_repeat_identify_is_served_from_the_store(zoo_dir, db, tmp_path, monkeypatch):
    store = Store(tmp_path / "cache")
    first = ident.identify(zoo_dir / "Child.safetensors", db, store=store)
    assert first["verdict"]["relation"] == "identical" and "cached" not in first["stats"]

    def boom(*a, **k):
        raise AssertionError("no hashing or weight reads on a repeat")
    monkeypatch.setattr(ident, "hash_file", boom)
    monkeypatch.setattr(ident, "fingerprint_path", boom)
    again = ident.identify(zoo_dir / "Child.safetensors", db, store=store)
    assert again["stats"]["cached"] == "report"
    assert again["verdict"] == first["verdict"]


def test_hashed_copy_reuses_fingerprint_and_changed_file_misses(zoo_dir, db, tmp_path, monkeypatch):
    store = Store(tmp_path / "cache")
    src = tmp_path / "m.safetensors"
    src.write_bytes((zoo_dir / "Other.safetensors").read_bytes())
    ident.identify(src, db, store=store, hash_policy="always")
    copy = tmp_path / "copied.safetensors"
    copy.write_bytes(src.read_bytes())
    calls = []
    real = ident.fingerprint_path
    monkeypatch.setattr(ident, "fingerprint_path", lambda p: calls.append(p) or real(p))
    rep = ident.identify(copy, db, store=store, hash_policy="always")   # hashed (new identity): found by hash
    assert rep["stats"]["cached"] == "report" and calls == [] and rep["hash"] == "computed"
    # same name, new content: identity changes, so it is fingerprinted again
    testkit.write_safetensors(src, testkit.finetune(testkit.random_state_dict(testkit.checkpoint_spec("sd1", "tiny"), 1),
                                                0.05, 9), "F16")
    rep = ident.identify(src, db, store=store)
    assert "cached" not in rep["stats"] and calls == [str(src)]
    assert rep["verdict"]["relation"] == "derivative" and rep["sha256"] is None


def test_renamed_file_is_recognised_without_hashing(zoo_dir, db, tmp_path, monkeypatch):
    store = Store(tmp_path / "cache")
    src = tmp_path / "m.safetensors"           # a fine-tune no reference holds: nothing to hash for
    testkit.write_safetensors(src, testkit.finetune(testkit.random_state_dict(testkit.checkpoint_spec("sd1", "tiny"), 1),
                                                0.05, 11), "F16")
    first = ident.identify(src, db, store=store)
    assert first["sha256"] is None and first["hash"] == "not computed"
    moved = tmp_path / "sub"
    moved.mkdir()
    os.rename(src, moved / "renamed.safetensors")
    monkeypatch.setattr(ident, "fingerprint_path", lambda p: (_ for _ in ()).throw(AssertionError("read again")))
    monkeypatch.setattr(ident, "hash_file", lambda *a, **k: (_ for _ in ()).throw(AssertionError("hashed")))
    rep = ident.identify(moved / "renamed.safetensors", db, store=store)
    assert rep["stats"]["cached"] == "report" and rep["verdict"] == first["verdict"]
    assert store.info()["files"] == 1          # the old name is forgotten: it is gone


def test_host_supplied_sha256_skips_hashing(zoo_dir, db, tmp_path, monkeypatch):
    sha = hashlib.sha256((zoo_dir / "Child.safetensors").read_bytes()).hexdigest()
    monkeypatch.setattr(ident, "hash_file", lambda *a, **k: (_ for _ in ()).throw(AssertionError("hashed")))
    rep = ident.identify(zoo_dir / "Child.safetensors", db, store=Store(tmp_path / "c"), sha256=sha.upper())
    assert rep["sha256"] == sha and rep["verdict"]["relation"] == "identical"


def test_file_replaced_while_hashing_is_detected_and_not_cached(zoo_dir, tmp_path, db):
    p = tmp_path / "moving.safetensors"
    p.write_bytes((zoo_dir / "Base.safetensors").read_bytes())
    other = (zoo_dir / "Other.safetensors").read_bytes()
    done = []

    def swap(n, total):
        if not done:
            done.append(1)
            tmp = tmp_path / "new.tmp"
            tmp.write_bytes(other)
            os.replace(tmp, p)      # atomic replace under the reader, as a download manager does
    with pytest.raises(BadFileError, match="changed while"):
        hash_file(p, progress=swap)
    store = Store(tmp_path / "cache")
    done.clear()
    with pytest.raises(BadFileError, match="changed while"):
        ident.identify(p, db, store=store, progress=swap)
    assert store.info()["files"] == 0 and store.info()["fingerprints"] == 0


def test_appended_while_hashing(zoo_dir, tmp_path):
    p = tmp_path / "growing.safetensors"
    p.write_bytes((zoo_dir / "Base.safetensors").read_bytes())
    grown = []

    def grow(n, total):
        if not grown:
            grown.append(1)
            with open(p, "ab") as f:
                f.write(b"x" * 100)
    with pytest.raises(BadFileError, match="changed while"):
        hash_file(p, progress=grow)


def test_corrupt_database_is_rebuilt(zoo_dir, db, tmp_path, caplog):
    d = tmp_path / "cache"
    d.mkdir()
    (d / DB_NAME).write_bytes(b"this is not sqlite" * 1000)
    store = Store(d)
    assert store.enabled and not store.readonly
    assert "damaged" in caplog.text
    rep = ident.identify(zoo_dir / "Child.safetensors", db, store=store)
    assert rep["error"] is None and store.info()["files"] == 1
    assert list(d.glob(f"{DB_NAME}.corrupt-*"))


def test_corruption_after_open_degrades(zoo_dir, db, tmp_path):
    d = tmp_path / "cache"
    store = Store(d)
    ident.identify(zoo_dir / "Child.safetensors", db, store=store)
    store.close()
    raw = bytearray((d / DB_NAME).read_bytes())
    raw[100:4000] = os.urandom(3900)            # smash the schema page
    (d / DB_NAME).write_bytes(bytes(raw))
    for ext in ("-wal", "-shm"):
        Path(str(d / DB_NAME) + ext).unlink(missing_ok=True)
    rep = ident.identify(zoo_dir / "Child.safetensors", db, store=Store(d))
    assert rep["error"] is None and rep["verdict"]["relation"] == "identical"


RO_IDENTIFY = r"""
import json, sys
sys.path.insert(0, {root!r})
from fpcore import identify as ident
from fpcore.refs.library import RefDB
from fpcore.store import Store
store = Store({cache!r})
rep = ident.identify({model!r}, RefDB({refs!r}, builtin_dir={builtin!r}), store=store)
print(json.dumps({{"error": rep["error"], "relation": rep["verdict"]["relation"], "cached": rep["stats"].get("cached"),
                  "enabled": store.enabled, "readonly": store.readonly}}))
"""


def _read_only_run(cache: Path, script: str) -> tuple[int, str, str]:
    """Run ``script`` with ``cache`` read-only: a bind mount remounted read-only in a private mount
    namespace (``unshare -m`` as root, ``unshare -rm``, a user namespace, otherwise), or, where no
    namespace can be made and we are not root, the folder's permissions (root ignores those)."""
    mount = f"mount --bind '{cache}' '{cache}' && mount -o remount,bind,ro '{cache}' && exec \"$0\" -c \"$1\""
    ns = ["unshare", "-m"] if os.geteuid() == 0 else ["unshare", "-rm"]
    r = subprocess.run([*ns, "sh", "-c", mount, sys.executable, script], capture_output=True, text=True,
                       timeout=120) if shutil.which("unshare") else None
    if r is not None and (r.returncode == 0 or "Traceback" in r.stderr):
        return r.returncode, r.stdout, r.stderr
    why = r.stderr.strip()[-200:] if r is not None else "unshare (util-linux) is not installed"
    if os.geteuid() == 0:
        pytest.skip(f"cannot bind-mount the cache read-only here ({why}); the simulated test below covers it")
    files = [cache / f for f in os.listdir(cache)]
    for f in files:
        os.chmod(f, 0o444)
    os.chmod(cache, 0o555)
    try:
        r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    finally:
        os.chmod(cache, 0o755)
        for f in files:
            os.chmod(f, 0o644)
    return r.returncode, r.stdout, r.stderr


def test_read_only_cache_dir(zoo_dir, db, tmp_path):
    """A cache on a read-only file system, as root too: identify answers from what the store
    holds (the report cached by an earlier run), nothing crashes, and not a byte of it changes."""
    d = tmp_path / "ro"
    store = Store(d)
    ident.identify(zoo_dir / "Child.safetensors", db, store=store)      # an earlier run, writable
    store.close()
    before = {f: (d / f).read_bytes() for f in sorted(os.listdir(d))}
    script = RO_IDENTIFY.format(root=str(ROOT), cache=str(d), model=str(zoo_dir / "Child.safetensors"),
                                refs=str(tmp_path / "refs"), builtin=str(tmp_path / "no-builtin"))
    code, out, err = _read_only_run(d, script)
    assert code == 0 and "Traceback" not in err, err
    got = json.loads(out.strip().splitlines()[-1])
    assert got["error"] is None and got["relation"] == "identical", got
    assert got["cached"] == "report" and got["enabled"] and got["readonly"], got
    assert {f: (d / f).read_bytes() for f in sorted(os.listdir(d))} == before


def test_read_only_store_simulated(zoo_dir, db, tmp_path, monkeypatch, caplog):
    """A store whose writes fail as on a read-only mount: reads work, nothing crashes."""
    d = tmp_path / "cache"
    Store(d).close()
    real = sqlite3.connect

    def ro_connect(target, *a, **k):
        if "mode=ro" not in str(target):
            raise sqlite3.OperationalError("attempt to write a readonly database")
        return real(target, *a, **k)
    monkeypatch.setattr(sqlite3, "connect", ro_connect)
    store = Store(d)
    assert store.enabled and store.readonly
    rep = ident.identify(zoo_dir / "Child.safetensors", db, store=store)
    assert rep["error"] is None and rep["verdict"]["relation"] == "identical"
    assert "read-only" in caplog.text


def test_unwritable_everything_works_without_cache(zoo_dir, db, tmp_path, monkeypatch):
    monkeypatch.setattr(sqlite3, "connect", lambda *a, **k: (_ for _ in ()).throw(
        sqlite3.OperationalError("unable to open database file")))
    store = Store(tmp_path / "nowhere")
    assert not store.enabled
    rep = ident.identify(zoo_dir / "Child.safetensors", db, store=store)
    assert rep["error"] is None


WRITER = r"""
import sys, time
sys.path.insert(0, {root!r})
from fpcore.store import Store
from fpcore.sources import FileIdentity
s = Store({d!r})
w = int(sys.argv[1])
for i in range(60):
    k = (w * 1000 + i) if i % 3 else i           # every third entry is written by all four
    s.put_file(FileIdentity(f"/m/{{k}}", k, k, k), f"{{k:064x}}", None)
    s.put_report(f"{{k:064x}}", "tok", {{"writer": w, "i": i}})
print("ok")
"""


def test_four_processes_write_at_once(tmp_path):
    d = tmp_path / "shared"
    Store(d).close()
    code = WRITER.format(root=str(ROOT), d=str(d))
    procs = [subprocess.Popen([sys.executable, "-c", code, str(w)], stdout=subprocess.PIPE, text=True)
             for w in range(4)]
    outs = [p.communicate(timeout=120)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs) and all(o.strip() == "ok" for o in outs)
    con = sqlite3.connect(d / DB_NAME)
    assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    paths = {r[0] for r in con.execute("SELECT path FROM files")}
    expected = {f"/m/{(w * 1000 + i) if i % 3 else i}" for w in range(4) for i in range(60)}
    assert paths == expected                                # nothing lost
    assert con.execute("SELECT count(*) FROM reports").fetchone()[0] == len(expected)


def test_known_release_is_named_and_registered(zoo_dir, tmp_path, monkeypatch):
    p = zoo_dir / "Base.safetensors"
    sha = hashlib.sha256(p.read_bytes()).hexdigest()
    entry = {"family": "Pony", "variant": "Pony Diffusion V6 XL", "filename": "v6.safetensors", "sha256": sha,
             "sources": ["test"]}
    entry["size_bytes"] = p.stat().st_size          # its size is a known release's: so it is hashed
    known.table.cache_clear()
    known.sizes.cache_clear()
    monkeypatch.setattr(known, "table", lambda: {sha: entry})
    d = RefDB(tmp_path / "refs", builtin_dir=tmp_path / "none")
    rep = ident.identify(p, d, store=Store(tmp_path / "c"))
    known.sizes.cache_clear()
    assert rep["hash"] == "computed"
    assert rep["verdict"]["relation"] == "identical"
    assert rep["verdict"]["summary"].startswith("Identical to the official Pony Diffusion V6 XL release")
    d2 = RefDB(tmp_path / "refs", builtin_dir=tmp_path / "none")
    r = d2.refs["Pony Diffusion V6 XL"]
    assert r.origin == "known_hash" and r.parent == "SDXL base 1.0" and r.sha256 == sha
    # its fingerprint now serves as a reference: a fine-tune of it is placed under it
    ft = tmp_path / "ft.safetensors"
    testkit.write_safetensors(ft, testkit.finetune(testkit.random_state_dict(testkit.checkpoint_spec("sd1", "tiny"), 1),
                                               0.02, 4), "F16")
    rep = ident.identify(ft, d2, hashes=False)
    assert rep["verdict"]["base"] == "Pony Diffusion V6 XL"


def test_shipped_known_hashes_have_sources():
    rows = json.loads((ROOT / "refs" / "known_hashes.json").read_text())
    assert len(rows) == 94
    assert all(len(r["sha256"]) == 64 and r["sources"] for r in rows)
    t = known.table()
    assert t["31e35c80fc4829d14f90153f4c74cd59c90b779f6afe05a74cd6120b893f7e5b"]["variant"] == "SDXL base 1.0"
    assert known.parent_of(t["67ab2fd8ec439a89b3fedb15cc65f54336af163c7eb5e4f2acc98f090a29b0b3"]) == "SDXL base 1.0"


def test_cache_commands(zoo_dir, tmp_path, monkeypatch, capsys):
    from fpcore.cli import main
    monkeypatch.setenv("FPCORE_CACHE", str(tmp_path / "c"))
    copy = tmp_path / "m.safetensors"
    copy.write_bytes((zoo_dir / "Base.safetensors").read_bytes())
    assert main(["hash", str(copy), "--json"]) == 0
    first = json.loads(capsys.readouterr().out)[0]
    assert first["cached"] is False
    assert main(["hash", str(copy), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0] == dict(first, cached=True)
    assert main(["cache", "info", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["files"] == 1
    copy.unlink()                                      # the file is gone: prune forgets it
    assert main(["cache", "prune", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["files"] == 1
    assert main(["cache", "info", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["files"] == 0
    assert main(["cache", "clear"]) == 0
