"""Fingerprint first: a whole-file hash only where it decides something (issue 15).

identify and scan answer from the fingerprint; the SHA-256 is computed for a file the size of a
known release, to confirm same-size files with the same fingerprint (or a copy of a hashed
reference) before "identical", on request, or taken from the host (A1111's cache.json). The
store migrates schema 1; folder peers come from the sketch and match the exhaustive comparison.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
from pathlib import Path

import numpy as np
import pytest

import testkit
from fpcore.store import hostcache
from fpcore.refs import known, sketch
from fpcore import scan
from fpcore import identify as ident
from fpcore.refs.library import RefDB
from fpcore.store import DB_NAME, SCHEMA_VERSION, Store

DATA = Path(__file__).resolve().parent / "data"
SPEC = testkit.checkpoint_spec("sd1", "tiny")


@pytest.fixture(scope="module")
def base():
    return testkit.random_state_dict(SPEC, 1)


@pytest.fixture
def hash_calls(monkeypatch):
    """Every whole-file hash identify and scan compute, by path."""
    calls = []
    real = ident.hash_file

    def spy(p, *a, **k):
        calls.append(os.fspath(p))
        return real(p, *a, **k)
    monkeypatch.setattr(ident, "hash_file", spy)
    return calls


def _db(tmp_path):
    return RefDB(tmp_path / "refs", builtin_dir=tmp_path / "none")


def _write(path, sd, dtype="F16", metadata=None):
    testkit.write_safetensors(path, sd, dtype, metadata=metadata)
    return Path(path)


# -- identify ---------------------------------------------------------------------------------------

def test_default_identify_reads_only_the_fingerprint(tmp_path, base, hash_calls):
    p = _write(tmp_path / "ft.safetensors", testkit.finetune(base, 0.05, 2))
    rep = ident.identify(p, _db(tmp_path), store=Store(tmp_path / "c"))
    assert hash_calls == []
    assert rep["sha256"] is None and rep["autov2"] is None and rep["hash"] == "not computed"
    assert rep["stats"]["bytes_read"] < 0.05 * p.stat().st_size
    again = ident.identify(p, _db(tmp_path), store=Store(tmp_path / "c"))     # the store answers
    assert again["stats"]["cached"] == "report" and again["hash"] == "not computed" and hash_calls == []


def test_hash_on_request_never_and_for_a_known_release_size(tmp_path, base, hash_calls, monkeypatch):
    p = _write(tmp_path / "ft.safetensors", testkit.finetune(base, 0.05, 3))
    sha = hashlib.sha256(p.read_bytes()).hexdigest()
    rep = ident.identify(p, _db(tmp_path), hash_policy="always")
    assert rep["sha256"] == sha and rep["hash"] == "computed" and hash_calls == [str(p)]
    monkeypatch.setattr(known, "sizes", lambda: frozenset({p.stat().st_size}))   # a release of this size exists
    assert ident.identify(p, _db(tmp_path), hash_policy="never")["hash"] == "not computed"
    assert len(hash_calls) == 1
    rep = ident.identify(p, _db(tmp_path))
    assert rep["sha256"] == sha and rep["hash"] == "computed" and len(hash_calls) == 2
    monkeypatch.setattr(known, "sizes", lambda: frozenset({p.stat().st_size + 1}))
    assert ident.identify(p, _db(tmp_path))["hash"] == "not computed" and len(hash_calls) == 2


def test_known_release_sizes_are_sourced():
    rows = json.loads((Path(__file__).resolve().parent.parent / "refs" / "known_hashes.json").read_text())
    sized = [r for r in rows if isinstance(r.get("size_bytes"), int)]
    assert len(sized) >= 50 and known.size_matches(6938078334)                    # SDXL base 1.0
    assert not known.size_matches(6938078333)


def test_copy_of_a_reference_is_hashed_a_precision_copy_is_not(tmp_path, base, hash_calls):
    db = _db(tmp_path)
    ref = _write(tmp_path / "ref.safetensors", base)
    ident.add_reference(db, ref, "Base")
    hash_calls.clear()
    copy = tmp_path / "copy.safetensors"
    shutil.copy(ref, copy)
    rep = ident.identify(copy, db, store=Store(tmp_path / "c"))
    assert rep["verdict"]["relation"] == "identical" and rep["hash"] == "computed" and hash_calls == [str(copy)]
    f32 = _write(tmp_path / "f32.safetensors", base, "F32")
    rep = ident.identify(f32, db, store=Store(tmp_path / "c"))
    assert rep["verdict"]["relation"] == "same_weights" and rep["sha256"] is None and len(hash_calls) == 1
    # same tensors, other metadata of the same length: the fingerprint cannot tell, the hash can
    meta = _write(tmp_path / "meta.safetensors", base, metadata={"x": "1"})
    rep = ident.identify(meta, db)
    assert rep["verdict"]["relation"] != "identical"


def test_host_supplied_and_a1111_cache_json(tmp_path, base, hash_calls):
    webui = tmp_path / "webui"
    models = webui / "models" / "Stable-diffusion" / "sub"
    models.mkdir(parents=True)
    p = _write(models / "m.safetensors", testkit.finetune(base, 0.05, 4))
    sha = hashlib.sha256(p.read_bytes()).hexdigest()
    (webui / "cache.json").write_text(json.dumps({"hashes": {
        "checkpoint/sub/m.safetensors": {"mtime": os.path.getmtime(p), "sha256": sha},
        "checkpoint/other.safetensors": {"mtime": 1, "sha256": "0" * 64}}}, indent=4))
    hostcache.clear()
    rep = ident.identify(p, _db(tmp_path), store=Store(tmp_path / "c"))
    assert rep["sha256"] == sha and rep["hash"] == "host" and hash_calls == []
    assert ident.identify(p, _db(tmp_path), sha256=sha.upper())["hash"] == "host"
    # the file is newer than the host's entry: A1111 would not trust it, nor do we
    st = p.stat()
    os.utime(p, (st.st_atime + 10, st.st_mtime + 10))
    rep = ident.identify(p, _db(tmp_path))
    assert rep["sha256"] is None and rep["hash"] == "not computed"
    assert hostcache.sha256_for(tmp_path / "elsewhere.safetensors") is None
    (webui / "cache.json").write_text("{not json")
    assert hostcache.sha256_for(p) is None                       # unreadable: ignored, no error


def test_file_changing_while_fingerprinted_is_reported_and_not_cached(tmp_path, base):
    p = _write(tmp_path / "m.safetensors", testkit.finetune(base, 0.05, 5))
    other = _write(tmp_path / "o.safetensors", testkit.finetune(base, 0.05, 6)).read_bytes()
    store = Store(tmp_path / "c")

    def rewrite(done, total):
        with open(p, "r+b") as f:
            f.write(other)
    with pytest.raises(ident.BadFileError, match="changed while it was being fingerprinted"):
        ident.identify(p, _db(tmp_path), store=store, progress=rewrite)
    info = store.info()
    assert info["files"] == 0 and info["fingerprints"] == 0 and info["reports"] == 0


# -- the store ----------------------------------------------------------------------------------------

def test_schema_1_store_is_migrated_not_misread(tmp_path):
    """tests/data/store_schema1.sqlite3 was written by the schema-1 store (before this change) for
    the file below; its row is pointed at this copy, then today's Store opens it."""
    p = _write(tmp_path / "model.safetensors", testkit.random_state_dict(SPEC, 7))
    sha = hashlib.sha256(p.read_bytes()).hexdigest()
    d = tmp_path / "cache"
    d.mkdir()
    shutil.copy(DATA / "store_schema1.sqlite3", d / DB_NAME)
    st = p.stat()
    con = sqlite3.connect(d / DB_NAME)
    assert con.execute("SELECT v FROM meta WHERE k='schema'").fetchone()[0] == "1"
    assert con.execute("SELECT sha256 FROM files").fetchone()[0] == sha          # the fixture is this file's
    con.execute("UPDATE files SET path=?, mtime_ns=?, inode=?", (os.path.realpath(p), st.st_mtime_ns, st.st_ino))
    con.commit()
    con.close()
    store = Store(d)
    assert store.enabled and not list(d.glob("*.corrupt-*"))
    info = store.info()
    assert (info["files"], info["fingerprints"], info["reports"]) == (1, 1, 0)   # old reports dropped
    rec = store.file_record(ident.file_identity(str(p)))
    assert rec.sha256 == sha and rec.key == sha and rec.hash_origin == "computed" and rec.autov3 == "abcdef012345"
    loaded: dict = {}
    rep = ident.identify(p, _db(tmp_path), store=store, fingerprints=loaded)
    assert rep["sha256"] == sha and rep["hash"] == "computed"
    # the fingerprint comes from the migrated store, not from reading the file again ...
    assert rep["stats"].get("cached") == "fingerprint"
    # ... and it is the file's: what a fresh read of the file gives, tensor for tensor
    fresh, arch_fresh = ident.fingerprint_path(p)[:2]
    old = loaded[str(p)]
    assert old.keys == fresh.keys and old.shapes == fresh.shapes
    assert np.array_equal(old.h_val, fresh.h_val) and old.raw == fresh.raw
    assert rep["architecture"]["family"] == arch_fresh.family == "sd1"
    store.close()
    con = sqlite3.connect(d / DB_NAME)
    assert con.execute("SELECT v FROM meta WHERE k='schema'").fetchone()[0] == str(SCHEMA_VERSION)
    con.close()


def test_store_of_a_newer_version_is_left_alone(tmp_path, caplog):
    d = tmp_path / "cache"
    Store(d).close()
    con = sqlite3.connect(d / DB_NAME)
    con.execute("UPDATE meta SET v='99' WHERE k='schema'")
    con.commit()
    con.close()
    store = Store(d)
    assert not store.enabled and "newer" in caplog.text
    assert not list(d.glob("*.corrupt-*")) and (d / DB_NAME).exists()


# -- scan -----------------------------------------------------------------------------------------------

def _folder(tmp_path, base):
    d = tmp_path / "models"
    d.mkdir()
    a = testkit.finetune(base, 0.05, 10)
    b = testkit.random_state_dict(SPEC, 2)
    _write(d / "a.safetensors", a)
    shutil.copy(d / "a.safetensors", d / "a_copy.safetensors")
    _write(d / "a_fp32.safetensors", a, "F32")
    _write(d / "a_meta.safetensors", a, metadata={"x": "1"})      # same size and fingerprint, other bytes
    _write(d / "a_meta2.safetensors", a, metadata={"x": "2"})
    _write(d / "b.safetensors", b)
    _write(d / "mix.safetensors", testkit.merge([(a, 0.5), (b, 0.5)]))
    return d


def test_scan_hashes_only_same_size_same_fingerprint_files(tmp_path, base, hash_calls):
    d = _folder(tmp_path, base)
    # metadata of the same length: same size; the header differs, so the bytes do
    assert (d / "a_meta.safetensors").stat().st_size == (d / "a_meta2.safetensors").stat().st_size
    res = scan.scan_folder(d, db=_db(tmp_path), cache_dir=tmp_path / "c")
    by = {Path(r["path"]).name: r for r in res["reports"]}
    assert sorted(Path(p).name for p in hash_calls) == ["a.safetensors", "a_copy.safetensors",
                                                        "a_meta.safetensors", "a_meta2.safetensors"]
    for n in ("a_fp32.safetensors", "b.safetensors", "mix.safetensors"):
        assert by[n]["sha256"] is None and by[n]["hash"] == "not computed"
    ident_groups = [sorted(Path(p).name for p in g["paths"]) for g in res["groups"] if g["relation"] == "identical"]
    assert ident_groups == [["a.safetensors", "a_copy.safetensors"]]          # only where the bytes are equal
    same = [sorted(Path(p).name for p in g["paths"]) for g in res["groups"] if g["relation"] == "same_weights"]
    assert ["a.safetensors", "a_copy.safetensors", "a_fp32.safetensors", "a_meta.safetensors",
            "a_meta2.safetensors"] in same
    assert by["mix.safetensors"]["folder"]["relation"] == "merge"
    # a rescan of the unchanged folder: no hashing, no weight reads
    hash_calls.clear()
    again = scan.scan_folder(d, db=_db(tmp_path), cache_dir=tmp_path / "c")
    assert hash_calls == [] and all(r["stats"].get("cached") == "report" for r in again["reports"])
    assert again["groups"] == res["groups"]


def test_scan_file_changed_before_its_confirming_hash(tmp_path, base, monkeypatch):
    d = _folder(tmp_path, base)
    victim = d / "a_copy.safetensors"
    other = (d / "a_meta.safetensors").read_bytes()
    real = ident.hash_file

    def change_then_hash(p, *a, **k):
        if Path(p) == victim:
            with open(victim, "r+b") as f:
                f.write(other[:4096])
        return real(p, *a, **k)
    monkeypatch.setattr(ident, "hash_file", change_then_hash)
    store = Store(tmp_path / "c")
    res = scan.scan_folder(d, db=_db(tmp_path), store=store)
    by = {Path(r["path"]).name: r for r in res["reports"]}
    assert "changed" in by["a_copy.safetensors"]["error"]
    assert not any(str(victim) in g["paths"] for g in res["groups"])
    assert store.lookup_file(ident.file_identity(str(victim))) is None          # no hash cached for it


def _lineage_folder(root: Path, n_bases: int = 3, per_base: int = 5) -> Path:
    """A folder with more distinct contents than peer candidates: fine-tunes, fine-tunes of
    fine-tunes, precision copies, byte copies and merges across bases."""
    root.mkdir()
    rng = np.random.default_rng(0)
    fts = []
    for b in range(n_bases):
        bsd = testkit.random_state_dict(SPEC, 100 + b)
        _write(root / f"base{b}.safetensors", bsd)
        for i in range(per_base):
            ft = testkit.finetune(bsd, 0.04 + 0.01 * i, 1000 * b + i)
            fts.append(ft)
            _write(root / f"b{b}_ft{i}.safetensors", ft, "BF16" if i == 2 else "F16")
            if i == 0:
                _write(root / f"b{b}_ft{i}_child.safetensors", testkit.finetune(ft, 0.03, 7000 + b))
                _write(root / f"b{b}_ft{i}_fp32.safetensors", ft, "F32")
    shutil.copy(root / "b0_ft1.safetensors", root / "b0_ft1 (copy).safetensors")
    for j in range(3):
        x, y = rng.choice(len(fts), 2, replace=False)
        _write(root / f"merge{j}.safetensors", testkit.merge([(fts[x], 0.5), (fts[y], 0.5)]))
    return root


def _relations(res) -> dict:
    """Each file's folder relation; a peer or merge member is named by its set of copies (the
    scan's groups of the same bytes or the same weights): naming either copy is right."""
    same = {}
    for g in res["groups"]:
        names = sorted(Path(p).name for p in g["paths"])
        for n in names:
            same[n] = "=".join(names)
    name = lambda p: same.get(Path(p).name, Path(p).name)  # noqa: E731
    out = {}
    for r in res["reports"]:
        f = r.get("folder") or {}
        out[Path(r["path"]).name] = (f.get("relation"), name(f["peer"]) if f.get("peer") else None,
                                     sorted((name(m["ref"]), round(m["weight"], 2)) for m in f.get("merge", [])))
    return out


def _group_names(res) -> list:
    return sorted((g["relation"], tuple(sorted(Path(p).name for p in g["paths"]))) for g in res["groups"])


@pytest.fixture(scope="module")
def family24(tmp_path_factory):
    """_lineage_folder(2, 4), written once for the tests that scan it without changing it, and
    its scan with the default choice of peers (every value of every sample compared)."""
    root = tmp_path_factory.mktemp("family24")
    d = _lineage_folder(root / "m", 2, 4)
    return d, scan.scan_folder(d, db=_db(root), cache_dir=root / "c")


def test_sketch_peers_give_the_exhaustive_result(tmp_path, family24):
    d, fast = family24
    slow = scan.scan_folder(d, db=_db(tmp_path), cache_dir=tmp_path / "c2", peer_candidates=10 ** 6)
    assert len(fast["reports"]) > 2 * scan.PEER_CANDIDATES                   # the sketch had to choose
    assert _group_names(fast) == _group_names(slow)
    assert _relations(fast) == _relations(slow)
    assert any(r[0] == "merge" for r in _relations(fast).values())


def test_sketch_is_fixed_length_and_finds_the_nearest(tmp_path, base):
    fps = {}
    for name, sd, dt in [("base", base, "F16"), ("base32", base, "F32"), ("ft", testkit.finetune(base, 0.05, 1), "F16"),
                         ("other", testkit.random_state_dict(SPEC, 9), "F16")]:
        fps[name] = ident.fingerprint_path(_write(tmp_path / f"{name}.safetensors", sd, dt))[0]
    names = list(fps)
    m = sketch.sketch_matrix([fps[n] for n in names], "unet")
    assert m.shape == (4, sketch.SKETCH_DIM) and np.allclose(np.linalg.norm(m, axis=1), 1, atol=1e-5)
    assert np.array_equal(m, sketch.sketch_matrix([fps[n] for n in names], "unet"))      # deterministic
    near = [names[i] for i in sketch.nearest(m, m[0], 3, exclude=0)]
    assert near == ["base32", "ft", "other"]
    assert abs(float(m[0] @ m[3])) < 0.2 and float(m[0] @ m[1]) > 0.999
    assert not sketch.sketch(fps["base"], "no_such_component").any()
    assert len(sketch.nearest(np.zeros((3, sketch.SKETCH_DIM), np.float32), m[0], 2)) == 0
    assert [list(x) for x in sketch.nearest_all(m, 1)][:2] == [[1], [0]]
    # every row against nearest() on the same matrix, in blocks smaller than the matrix too
    for block in (1, 3, 1024):
        assert [list(x) for x in sketch.nearest_all(m, 3, block=block)] == \
            [list(sketch.nearest(m, m[i], 3, exclude=i)) for i in range(4)]


def test_nearest_all_on_hand_computed_cosines():
    """Unit rows whose dot products are worked out by hand (row 4 is all zeros: never returned,
    and it has no neighbours); every row's neighbours in order, whatever the block size."""
    m = np.array([[0.96, 0, 0.28], [0.8, 0.6, 0], [0, 1, 0], [0, 0.28, 0.96], [0, 0, 0]], np.float32)
    # dots: 0.1 = .768, 0.2 = 0, 0.3 = .2688, 1.2 = .6, 1.3 = .168, 2.3 = .28
    want = [[1, 3, 2], [0, 2, 3], [1, 3, 0], [2, 0, 1], []]
    for block in (1, 2, 1024):
        assert [list(x) for x in sketch.nearest_all(m, 3, block=block)] == want
        assert [list(x) for x in sketch.nearest_all(m, 1, block=block)] == [w[:1] for w in want]
    assert list(sketch.nearest(m, m[2], 2, exclude=2)) == [1, 3]


def test_host_registered_cache_outside_the_models_tree(tmp_path, base, hash_calls):
    """A1111 started with --ckpt-dir elsewhere: the glue registers its cache.json and that folder."""
    ckpts = tmp_path / "ckpts"
    ckpts.mkdir()
    p = _write(ckpts / "m.safetensors", testkit.finetune(base, 0.05, 8))
    sha = hashlib.sha256(p.read_bytes()).hexdigest()
    cache = tmp_path / "data" / "cache.json"
    cache.parent.mkdir()
    cache.write_text(json.dumps({"hashes": {"checkpoint/m.safetensors": {"mtime": os.path.getmtime(p),
                                                                          "sha256": sha}}}))
    hostcache.clear()
    assert hostcache.sha256_for(p) is None
    hostcache.register(cache, [ckpts])
    try:
        rep = scan.scan_folder(ckpts, db=_db(tmp_path), cache_dir=tmp_path / "c")["reports"][0]
        assert rep["sha256"] == sha and rep["hash"] == "host" and hash_calls == []
    finally:
        hostcache.clear()


def test_pursuit_finds_both_members_of_a_merge_among_nearer_relatives():
    """x = 0.7 A + 0.3 B, with ten fine-tunes of A nearer to x than B is: the eight nearest by
    cosine are A and its children; the pursuit takes A, then B (what A leaves unexplained)."""
    from fpcore.scan.peers import _omp_peers
    rng = np.random.default_rng(3)
    n = 4000
    base = rng.standard_normal(n)
    a = base + 0.3 * rng.standard_normal(n)
    b = base + 0.3 * rng.standard_normal(n)
    kids = [a + 0.05 * rng.standard_normal(n) for _ in range(10)]
    x = 0.7 * a + 0.3 * b
    V = np.stack([x, a, b, *kids])
    V /= np.linalg.norm(V, axis=1, keepdims=True)
    G = V @ V.T
    nearest = list(np.argsort(-G[0])[1:9])
    assert 2 not in nearest                                   # B is not among the 8 nearest
    peers = _omp_peers(G, 0, 8)
    assert peers[:2] == [1, 2]
    assert 0 not in peers and len(peers) == len(set(peers))
    assert len(peers) == 2                  # A and B explain x: the children add nothing


def test_pursuit_keeps_only_the_files_that_explain_something():
    """A fine-tune among its parent and siblings: the parent and one more file (OMP_ALWAYS), no
    sibling beyond (their own trainings explain nothing of the file's)."""
    from fpcore.scan.peers import OMP_ALWAYS, _omp_peers
    rng = np.random.default_rng(5)
    n = 4000
    parent = rng.standard_normal(n)
    kids = [parent + 0.2 * rng.standard_normal(n) for _ in range(9)]
    V = np.stack([kids[0], parent, *kids[1:]])
    V /= np.linalg.norm(V, axis=1, keepdims=True)
    peers = _omp_peers(V @ V.T, 0, 8)
    assert peers[0] == 1 and len(peers) == OMP_ALWAYS


def test_merge_fit_keeps_one_of_two_copies_of_the_same_weights():
    """A file that merges A and B, with A also present as an fp32 copy: the fit names A once
    (the less noisy copy), and two different fine-tunes are both kept."""
    from fpcore.match.align import Moments
    from fpcore.match.fits import distinct_columns
    rng = np.random.default_rng(4)
    n = 20000
    a = rng.standard_normal(n)
    noise16 = 1e-6                                            # rounding variance of the fp16 copy
    a16 = a + rng.standard_normal(n) * np.sqrt(noise16)
    b = a + 0.05 * rng.standard_normal(n)                     # a fine-tune: far beyond rounding
    x = 0.5 * a + 0.5 * b
    M = np.stack([a16, a, b, x])
    m = Moments(M @ M.T, n, 0.0, np.array([noise16, 0.0, noise16]))
    assert distinct_columns(m) == [1, 2]                      # the fp32 copy kept, the fine-tune kept
    m2 = Moments(m.G[np.ix_([0, 2, 3], [0, 2, 3])], n, 0.0, np.array([noise16, noise16]))
    assert distinct_columns(m2) == [0, 1]


def test_a_family_too_large_for_the_exact_cosines_shortlists_by_sketch(tmp_path, monkeypatch, family24):
    """Beyond GRAM_MAX_WORK at every fourth value the peers come from a shortlist by sketch: the same groups, and
    the merges are still found."""
    from fpcore.scan import peers
    d, exact = family24
    db = _db(tmp_path)
    calls = []
    real = peers._pick_peers
    monkeypatch.setattr(peers, "_pick_peers", lambda *a: calls.append(a[0]) or real(*a))
    monkeypatch.setattr(peers, "GRAM_MAX_WORK", 1.0)
    sketched = scan.scan_folder(d, db=db, cache_dir=tmp_path / "c2")
    assert calls                                             # the sketch path ran
    assert _group_names(sketched) == _group_names(exact)
    merges = lambda res: sorted(k for k, v in _relations(res).items() if v[0] == "merge")  # noqa: E731
    assert merges(sketched) == merges(exact) and merges(exact)


def test_a_base_among_its_fine_tunes_is_not_their_merge(tmp_path):
    """Six fine-tunes of one base in a folder: their average is close to the base (their
    trainings cancel), which a merge fit alone took for a merge of the six."""
    d = tmp_path / "m"
    d.mkdir()
    base = testkit.random_state_dict(SPEC, 21)
    _write(d / "base.safetensors", base)
    for i in range(6):
        _write(d / f"ft{i}.safetensors", testkit.finetune(base, 0.05, 300 + i))
    rel = _relations(scan.scan_folder(d, db=_db(tmp_path), cache_dir=tmp_path / "c"))
    assert rel["base.safetensors"][0] == "related" and rel["base.safetensors"][2] == []
    assert all(rel[f"ft{i}.safetensors"][1] == "base.safetensors" for i in range(6))


def test_a_large_family_compares_every_few_values(tmp_path, monkeypatch, family24):
    """Beyond GRAM_MAX_WORK (up to GRAM_MAX_STRIDE times it) the cosines are taken on every few
    values: the same groups and merges as on every value."""
    from fpcore.scan import peers
    d = family24[0]
    db = _db(tmp_path)
    sizes, strides = [], []
    real_gram, real_rows_gram = peers._family_gram, peers.UnitRows.gram

    def family_gram(reps_, fps, comp, units, unit_rows=None):
        G, rows = real_gram(reps_, fps, comp, units, unit_rows)
        sizes.append((len(rows), len(units[reps_[0]][1])))
        return G, rows
    monkeypatch.setattr(peers, "_family_gram", family_gram)
    monkeypatch.setattr(peers.UnitRows, "gram", lambda self, rows, stride=1: strides.append(stride) or
                        real_rows_gram(self, rows, stride))
    full = scan.scan_folder(d, db=db, cache_dir=tmp_path / "c1")
    (m, length), = sizes
    monkeypatch.setattr(peers, "GRAM_MAX_WORK", m * m * length / 3)
    strided = scan.scan_folder(d, db=db, cache_dir=tmp_path / "c2")
    assert strides == [1, 3]
    assert _group_names(strided) == _group_names(full)
    merges = lambda res: sorted(k for k, v in _relations(res).items() if v[0] == "merge")  # noqa: E731
    assert merges(strided) == merges(full) and merges(full)


def test_a_file_with_another_layout_still_finds_its_peers(tmp_path, monkeypatch, family24):
    """A copy of a fine-tune missing a tensor (another sample layout than the family's): it is
    not in the family's cosines, finds its peers by sketch, and is still the same weights."""
    from fpcore.scan import peers
    calls = []
    real = peers._pick_peers
    monkeypatch.setattr(peers, "_pick_peers", lambda *a: calls.append(Path(a[0]).name) or real(*a))
    d = Path(shutil.copytree(family24[0], tmp_path / "m"))   # this test adds a file
    from safetensors.numpy import load_file
    sd = {k: v for k, v in load_file(str(d / "b0_ft1.safetensors")).items()}
    dropped = sorted(k for k, v in sd.items() if v.ndim >= 2 and "model.diffusion_model" in k)[-1]
    del sd[dropped]
    _write(d / "b0_ft1_pruned.safetensors", {k: v.astype(np.float32) for k, v in sd.items()}, "F16")
    res = scan.scan_folder(d, db=_db(tmp_path), cache_dir=tmp_path / "c")
    rel = _relations(res)
    assert calls == ["b0_ft1_pruned.safetensors"]             # only it went the sketch way
    assert rel["b0_ft1_pruned.safetensors"][0] == "same_weights"
    assert "b0_ft1.safetensors" in rel["b0_ft1_pruned.safetensors"][1]
    assert any(r[0] == "merge" for r in rel.values())


def test_unit_rows_give_the_products_of_the_rows_across_blocks(monkeypatch):
    """UnitRows keeps samples in blocks; its products equal those of the stacked rows, for rows
    spread over several blocks, in any order, on every value or every few."""
    from fpcore.scan import peers
    monkeypatch.setattr(peers, "UNIT_BLOCK_BYTES", 4 * 100 * 3)        # three rows of 100 per block
    rng = np.random.default_rng(6)
    X = rng.standard_normal((10, 100)).astype(np.float32)
    ur = peers.UnitRows()
    rows = [ur.put(x) for x in X]
    assert len(ur._blocks[100]) == 4
    order = [7, 2, 9, 0, 4]
    for stride in (1, 2, 3):
        G = ur.gram([rows[i] for i in order], stride)
        U = X[order][:, ::stride].astype(np.float64)
        assert np.allclose(G, U @ U.T, rtol=1e-5, atol=1e-4)
    assert ur.gram([X[0]]) is None                                     # not one of its rows
