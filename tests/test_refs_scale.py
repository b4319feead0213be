"""Reference libraries of thousands (issue 17): the catalog, lazy fingerprints, the candidate
index and its sparse merge selection. Speed and memory are measured in bench/refs_scale.py."""
from __future__ import annotations

import io
import json
import multiprocessing
import os
import zipfile
from pathlib import Path

import numpy as np
import pytest

from fpcore.refs import sketchindex as refindex, fpref as reffile, library as refs_mod
from fpcore.identify import identify
from fpcore.refs.folder import CATALOG
from fpcore.refs.library import RefDB
from testkit.library import Space, build_library
from testkit.weights import random_state_dict


def _db(d: Path) -> RefDB:
    return RefDB(d, builtin_dir=d / "none")


@pytest.fixture(scope="module")
def small_space():
    spec = {f"blocks.{b}.{p}.weight": (32, 32) for b in range(6) for p in ("a", "b")}
    return Space("unknown", sd=random_state_dict(spec, 3))


def _fill(d: Path, space, n: int, prefix="R") -> list:
    db = _db(d)
    comp = space.comp[0]
    out = []
    for i in range(n):
        v = space.finetune(space.base, 0.1, 1000 + i, comps=(comp,))
        db.add(space.fingerprint(v), f"{prefix}{i}", family="unknown")
        out.append(v)
    return out


def _no_fingerprint_reads(monkeypatch):
    def boom(*a, **k):
        raise AssertionError("a fingerprint was read")
    monkeypatch.setattr(reffile, "read_fingerprint", boom)   # its home: the library and the catalog call it there


# -- the catalog -------------------------------------------------------------------------------------
def test_listing_reads_no_fingerprint(tmp_path, small_space, monkeypatch):
    _fill(tmp_path / "r", small_space, 12)
    _db(tmp_path / "r").refs                       # first load writes the catalog
    assert (tmp_path / "r" / CATALOG).is_file()
    _no_fingerprint_reads(monkeypatch)
    db = _db(tmp_path / "r")
    rows = [r.info() for r in db.refs.values()]
    assert len(rows) == 12 and all(r["dtype"] == "fp16" and r["family"] == "unknown" for r in rows)
    assert not any(r.loaded for r in db.refs.values())
    # adding one more does not read the others either
    v = small_space.finetune(small_space.base, 0.1, 5, comps=(small_space.comp[0],))
    db.add(small_space.fingerprint(v), "New", parent="R3", family="unknown")
    assert db.lineage("New") == ["R3", "New"]


def test_catalog_follows_files_changed_by_others(tmp_path, small_space):
    d = tmp_path / "r"
    _fill(d, small_space, 5)
    a = _db(d)
    assert len(a.refs) == 5
    _fill(d, small_space, 2, prefix="Other")         # another process adds two
    os.unlink(d / "R0.fpref")                         # ... and removes one
    b = _db(d)
    assert set(b.refs) == {"R1", "R2", "R3", "R4", "Other0", "Other1"}
    assert b.refs["Other1"].fp.keys                   # readable lazily
    # an index built from the catalog has a sketch for each
    assert set(b.index.names[small_space.comp[0]]) == set(b.refs)


def test_old_fpref_without_sketch_keeps_working(tmp_path, small_space, monkeypatch):
    d = tmp_path / "r"
    d.mkdir()
    fp = small_space.fingerprint(small_space.base)
    buf = io.BytesIO()                                # the format before issue 17: two members only
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("ref.json", json.dumps({"name": "Old", "family": "unknown", "origin": "user"}))
        z.writestr("fingerprint.npz", fp.serialize())
    (d / "Old.fpref").write_bytes(buf.getvalue())
    db = _db(d)
    assert db.refs["Old"].fp.raw == fp.raw and db.refs["Old"].dtype == "fp16"
    assert db.sketch_of(db.refs["Old"], small_space.comp[0]) is not None
    _no_fingerprint_reads(monkeypatch)                # the catalog now remembers what it read
    db2 = _db(d)
    assert db2.refs["Old"].layouts and db2.refs["Old"].sketches


def test_damaged_catalog_and_damaged_reference(tmp_path, small_space):
    d = tmp_path / "r"
    _fill(d, small_space, 4)
    _db(d).refs
    (d / CATALOG).write_bytes(b"\x00garbage" * 100)
    (d / "R1.fpref").write_bytes(b"PK\x03\x04 truncated")
    db = _db(d)
    assert set(db.refs) == {"R0", "R2", "R3"}
    assert any("R1.fpref" in p for p in db.problems)


def test_unwritable_folder_keeps_catalog_in_cache_or_memory(tmp_path, small_space, monkeypatch):
    d = tmp_path / "r"
    _fill(d, small_space, 3)
    monkeypatch.setenv("FPCORE_CACHE", str(tmp_path / "cache"))
    real = refs_mod.paths.atomic_write

    def refuse_folder(p, data):
        if Path(p).parent == d:
            raise PermissionError(13, "Permission denied", str(p))
        return real(p, data)
    monkeypatch.setattr(refs_mod.paths, "atomic_write", refuse_folder)
    assert len(_db(d).refs) == 3
    assert not (d / CATALOG).exists() and list((tmp_path / "cache" / "refcatalog").glob("*" + CATALOG))

    def refuse_all(p, data):
        raise PermissionError(13, "Permission denied", str(p))
    monkeypatch.setattr(refs_mod.paths, "atomic_write", refuse_all)
    monkeypatch.setenv("FPCORE_CACHE", str(tmp_path / "cache2"))
    _fill(d, small_space, 0)
    os.unlink(d / "R2.fpref")
    assert set(_db(d).refs) == {"R0", "R1"}        # in memory only, still right


def _add_many(d: str, start: int, n: int) -> None:
    spec = {f"blocks.{b}.{p}.weight": (32, 32) for b in range(6) for p in ("a", "b")}
    sp = Space("unknown", sd=random_state_dict(spec, 3))
    for i in range(start, start + n):
        db = _db(Path(d))                              # a fresh process-like view each time
        db.refs
        db.add(sp.fingerprint(sp.finetune(sp.base, 0.1, i, comps=(sp.comp[0],))), f"P{i}", family="unknown")


def test_two_processes_adding_at_once(tmp_path):
    d = tmp_path / "r"
    ctx = multiprocessing.get_context("spawn")
    ps = [ctx.Process(target=_add_many, args=(str(d), s, 6)) for s in (0, 100)]
    for p in ps:
        p.start()
    for p in ps:
        p.join(120)
        assert p.exitcode == 0
    db = _db(d)
    assert set(db.refs) == {f"P{i}" for i in (*range(6), *range(100, 106))}
    assert len(db.index.names[next(iter(db.index.names))]) == 12


# -- the index ------------------------------------------------------------------------------------------
def test_forward_select_finds_members_and_no_spurious_ones():
    rng = np.random.default_rng(0)
    dim, n = refindex.SKETCH_DIM, 800
    base = rng.normal(size=dim)
    shared = rng.normal(size=dim)
    # siblings: base + own delta (a shared part as real fine-tunes have), unit length like sketches
    M = np.stack([base + 0.3 * (rng.normal(size=dim) + 0.25 * shared) for _ in range(n)])
    M /= np.linalg.norm(M, axis=1, keepdims=True)
    M = M.astype(np.float16)

    def unit(v):
        return v / np.linalg.norm(v)
    M32 = M.astype(np.float64)
    q = unit(0.5 * M32[10] + 0.3 * M32[20] + 0.2 * M32[30])
    first = int(np.argmax(refindex.matvec(M, q)))
    sel, w = refindex.forward_select(M, q, first)
    assert sorted(sel) == [10, 20, 30]
    assert sorted(w, reverse=True) == pytest.approx([0.5, 0.3, 0.2], abs=0.02)
    # a light fine-tune of one sibling: that sibling alone
    q = unit(M32[7] + 0.05 * unit(rng.normal(size=dim)) + 0.01 * shared / np.linalg.norm(shared))
    trace = []
    sel, _ = refindex.forward_select(M, q, int(np.argmax(refindex.matvec(M, q))), trace=trace)
    assert sel == [7] and trace and not trace[-1][2] and trace[-1][1] < refindex.SELECT_MIN_GAIN


@pytest.fixture(scope="module")
def sdxl_library(tmp_path_factory):
    """60 reduced-width SDXL references (a tree three levels deep) and five query files."""
    d = tmp_path_factory.mktemp("lib")
    sp = Space("sdxl")
    db = _db(d / "refs")
    lib = build_library(60, sp, each=lambda n, p, f, fp: db.add(fp, n, parent=p, family=f), sd1=2, unknown=2)
    S, v = lib.siblings, lib.values
    q = d / "q"
    q.mkdir()
    sp.write_model(q / "light.safetensors", sp.finetune(v[S[0]], 0.02, 91))
    sp.write_model(q / "merge3.safetensors", sp.merge([(v[S[3]], 0.5), (v[S[4]], 0.3), (v[S[5]], 0.2)]))
    sp.write_model(q / "unreg.safetensors", sp.finetune(sp.finetune(v[lib.hub], 0.08, 555), 0.02, 556))
    ind = Space("sdxl", seed=99)
    ind.write_model(q / "indep.safetensors", ind.base)
    want = {"light": ("derivative", S[0], {}), "merge3": ("merge", None, {S[3]: 0.5, S[4]: 0.3, S[5]: 0.2}),
            "unreg": ("derivative", lib.hub, {}), "indep": ("unknown", None, {})}
    return d / "refs", q, want


def test_index_gives_the_right_verdicts(sdxl_library, monkeypatch):
    """(Exhaustive matching gives the same here but takes minutes: bench/refs_scale.py compares them.)"""
    refs, q, want = sdxl_library
    monkeypatch.delenv("FPCORE_REFINDEX", raising=False)
    db = _db(refs)
    sizes = []
    orig_candidates = RefDB.candidates

    def spy(self, fp, comp, pool):
        out = orig_candidates(self, fp, comp, pool)
        sizes.append((len(pool), len(out)))
        return out
    monkeypatch.setattr(RefDB, "candidates", spy)
    for name, (rel, base, merge) in want.items():
        rep = identify(q / f"{name}.safetensors", db, hashes=False)
        v = rep["verdict"]
        assert v["relation"] == rel, (name, v)
        if rel != "merge":
            assert v["base"] == base and rep["merge"] == []
        else:
            got = {m["ref"]: m["weight"] for m in rep["merge"]}
            assert set(got) == set(merge) and all(abs(got[k] - w) <= 0.05 for k, w in merge.items())
    big = [(p, c) for p, c in sizes if p > refindex.INDEX_MIN_POOL]
    assert big             # the analysis saw a few candidates, never the whole pool
    assert all(c <= refindex.K_NEAREST + refindex.SELECT_MAX_MEMBERS + 6 for _, c in big)
    assert len(db._fps) <= refs_mod.FP_CACHE_MAX


def test_index_never_used_for_small_pools(tmp_path, small_space, monkeypatch):
    _fill(tmp_path / "r", small_space, 5)
    db = _db(tmp_path / "r")
    pool = list(db.refs.values())
    monkeypatch.setattr(refindex, "sketch", lambda *a: (_ for _ in ()).throw(AssertionError("index used")))
    assert refindex.select(db, small_space.fingerprint(small_space.base), small_space.comp[0], pool) == pool


def test_report_tree_of_a_large_family_reads_no_reference_fingerprint(tmp_path, monkeypatch):
    """Above TREE_EXACT_MAX_REFS references the family tree places them by the catalog's sketches."""
    from fpcore import api
    from fpcore.scan import html as report_html
    space = Space("sd1", seed=5)
    db = _db(tmp_path / "r")
    vals = [space.finetune(space.base, 0.1, 300 + i) for i in range(6)]
    for i, v in enumerate(vals):
        db.add(space.fingerprint(v), f"R{i}", family="sd1")
    models = tmp_path / "m"
    models.mkdir()
    space.write_model(models / "a.safetensors", space.finetune(vals[0], 0.03, 1))
    space.write_model(models / "b.safetensors", space.finetune(vals[1], 0.03, 2))
    res = api.scan_folder(str(models), refs_dir=str(tmp_path / "r"), cache_dir=str(tmp_path / "c"))
    exact = report_html.family_trees(res, _db(tmp_path / "r"))
    assert [f for f, _ in exact] == ["sd1"] and all(f"R{i}<" in exact[0][1] for i in range(6))
    monkeypatch.setattr(report_html, "TREE_EXACT_MAX_REFS", 2)
    _no_fingerprint_reads(monkeypatch)
    trees = report_html.family_trees(res, _db(tmp_path / "r"))
    assert [f for f, _ in trees] == ["sd1"]
    assert all(f"R{i}<" in trees[0][1] for i in range(6)) and "b.safetensors" in trees[0][1]
