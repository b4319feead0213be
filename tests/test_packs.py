"""Reference packs (issue 17): export, import, clashes, and damaged or hostile packs."""
from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from fpcore.refs import packs
from fpcore.errors import FpError, RefError
from fpcore.refs.library import RefDB
from testkit.library import Space
from testkit.weights import random_state_dict

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def space():
    spec = {f"blocks.{b}.{p}.weight": (32, 32) for b in range(6) for p in ("a", "b")}
    return Space("unknown", sd=random_state_dict(spec, 3))


def _db(d: Path) -> RefDB:
    return RefDB(d, builtin_dir=d / "none")


@pytest.fixture()
def library(tmp_path, space):
    db = _db(tmp_path / "lib")
    comp = space.comp[0]
    base = space.base
    child = space.finetune(base, 0.1, 1, comps=(comp,))
    db.add(space.fingerprint(base), "Base", note="trained from scratch", source="/home/alice/models/base.safetensors",
           family="unknown")
    db.add(space.fingerprint(child), "Child", parent="Base", source="https://example.org/child.safetensors",
           family="unknown")
    db.add(space.fingerprint(space.finetune(child, 0.05, 2, comps=(comp,))), "Grandchild", parent="Child",
           family="unknown")
    return db


def _names(d: Path) -> set:
    return set(_db(d).refs)


def test_roundtrip_keeps_names_parents_notes_and_weights(library, tmp_path):
    pack = tmp_path / "lib.fprefs"
    res = packs.export_pack(library, pack)
    assert res["references"] == ["Base", "Child", "Grandchild"] and res["parents_not_included"] == []
    dst = _db(tmp_path / "other")
    out = packs.import_pack(dst, pack)
    assert sorted(out["added"]) == ["Base", "Child", "Grandchild"]
    db = _db(tmp_path / "other")
    assert db.lineage("Grandchild") == ["Base", "Child", "Grandchild"]
    assert db.refs["Base"].note == "trained from scratch"
    assert db.refs["Child"].fp.raw == library.refs["Child"].fp.raw
    # a local path is shared as its file name only; a URL as given
    assert db.refs["Base"].source == "base.safetensors"
    assert db.refs["Child"].source == "https://example.org/child.safetensors"
    with zipfile.ZipFile(pack) as z:
        man = json.loads(z.read("pack.json"))
    assert man["fingerprint_version"] == 2 and man["version"] == packs.PACK_VERSION
    assert all(len(e["member_sha256"]) == 64 for e in man["references"])


def test_export_named_subset_reports_missing_parents(library, tmp_path):
    res = packs.export_pack(library, tmp_path / "p.fprefs", ["Grandchild"])
    assert res["references"] == ["Grandchild"] and res["parents_not_included"] == ["Child"]
    with pytest.raises(RefError, match="no reference named 'Nope'"):
        packs.export_pack(library, tmp_path / "q.fprefs", ["Nope"])
    assert not (tmp_path / "q.fprefs").exists()


def test_same_weights_under_same_name_is_unchanged(library, tmp_path):
    pack = tmp_path / "p.fprefs"
    packs.export_pack(library, pack)
    out = packs.import_pack(_db(library.user_dir), pack)
    assert out["added"] == [] and sorted(out["unchanged"]) == ["Base", "Child", "Grandchild"]


def _clashing(tmp_path, space) -> Path:
    """A folder with a different 'Child' registered."""
    d = tmp_path / "clash"
    db = _db(d)
    db.add(space.fingerprint(space.finetune(space.base, 0.2, 99, comps=(space.comp[0],))), "Child", family="unknown")
    return d


def test_clash_without_policy_imports_nothing(library, tmp_path, space):
    pack = tmp_path / "p.fprefs"
    packs.export_pack(library, pack)
    d = _clashing(tmp_path, space)
    with pytest.raises(RefError, match="already registered with other weights: 'Child'.*--rename or --skip"):
        packs.import_pack(_db(d), pack)
    assert _names(d) == {"Child"}


def test_clash_rename_repoints_children(library, tmp_path, space):
    pack = tmp_path / "p.fprefs"
    packs.export_pack(library, pack)
    d = _clashing(tmp_path, space)
    out = packs.import_pack(_db(d), pack, on_clash="rename")
    assert out["renamed"] == {"Child": "Child (2)"}
    db = _db(d)
    assert db.lineage("Grandchild") == ["Base", "Child (2)", "Grandchild"]
    assert db.refs["Child (2)"].fp.raw == library.refs["Child"].fp.raw
    assert db.refs["Child"].parent is None         # the user's own is untouched


def test_clash_skip_and_ask(library, tmp_path, space):
    pack = tmp_path / "p.fprefs"
    packs.export_pack(library, pack)
    d = _clashing(tmp_path, space)
    out = packs.import_pack(_db(d), pack, on_clash="skip")
    assert out["skipped"] == ["Child"] and sorted(out["added"]) == ["Base", "Grandchild"]
    d2 = _clashing(tmp_path / "b", space)
    asked = []
    with pytest.raises(RefError, match="cancelled"):
        packs.import_pack(_db(d2), pack, on_clash="ask", ask=lambda n: asked.append(n) or "abort")
    assert asked == ["Child"] and _names(d2) == {"Child"}


# -- damaged and hostile packs: one line, nothing imported -------------------------------------------
def _rewrite(pack: Path, out: Path, edit) -> Path:
    with zipfile.ZipFile(pack) as z:
        members = {i.filename: z.read(i) for i in z.infolist()}
    members = edit(members)
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as z:
        for n, b in members.items():
            z.writestr(n, b)
    return out


def _manifest(members, change):
    man = json.loads(members["pack.json"])
    change(man)
    raw = json.dumps(man).encode()
    members["pack.json"] = raw
    members["pack.sha256"] = (packs._sha(raw) + "\n").encode()
    return members


def _flip(b: bytes, at: int) -> bytes:
    return b[:at] + bytes([b[at] ^ 0xFF]) + b[at + 1:]


HOSTILE = {
    "member flipped": (lambda m: {**m, "refs/00001.fpref": _flip(m["refs/00001.fpref"], 2000)}, "checksum mismatch"),
    "manifest edited": (lambda m: {**m, "pack.json": m["pack.json"].replace(b"Child", b"Chold")}, "checksum mismatch"),
    "path traversal": (lambda m: {**m, "../../evil.fpref": b"x"}, "path traversal"),
    "absolute name": (lambda m: {**m, "/etc/evil": b"x"}, "path traversal"),
    "wrong pack version": (lambda m: _manifest(m, lambda d: d.update(version=99)), "pack format version 99"),
    "wrong fingerprint version": (lambda m: _manifest(m, lambda d: d.update(fingerprint_version=1)),
                                  "fingerprint version 1"),
    "deep JSON": (lambda m: _manifest(m, lambda d: d.update(x=json.loads("[" * 50 + "]" * 50))),
                  "unexpected structure"),
    "member swapped": (lambda m: {**m, "refs/00001.fpref": m["refs/00000.fpref"]}, "checksum mismatch"),
    "names a member that is not there": (lambda m: _manifest(m, lambda d: d["references"][1].update(
        member="refs/00009.fpref")), "member missing"),
    "two entries one name": (lambda m: _manifest(m, lambda d: d["references"][1].update(name="Base")),
                             "appears twice"),
    "not a pack": (lambda m: {"hello.txt": b"hi"}, "unexpected member name"),
    "no checksum": (lambda m: {k: v for k, v in m.items() if k != "pack.sha256"}, "missing"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_pack_one_line_nothing_imported(library, tmp_path, case):
    pack = tmp_path / "p.fprefs"
    packs.export_pack(library, pack)
    edit, msg = HOSTILE[case]
    bad = _rewrite(pack, tmp_path / "bad.fprefs", edit)
    d = tmp_path / "dst"
    with pytest.raises(FpError) as e:
        packs.import_pack(_db(d), bad)
    assert msg in str(e.value) and "\n" not in str(e.value) and str(bad) in str(e.value)
    assert _names(d) == set() and not list(d.glob("*")) if d.exists() else True


def test_zip_bomb_and_huge_json_refused_before_reading(library, tmp_path, monkeypatch):
    bomb = tmp_path / "bomb.fprefs"
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("pack.json", b" " * (200 << 20))        # 200 MB of spaces, ~200 KB deflated
        z.writestr("pack.sha256", b"0" * 64)
    with pytest.raises(packs.PackError, match="zip bomb|claims"):
        packs.import_pack(_db(tmp_path / "d"), bomb)
    pack = tmp_path / "p.fprefs"
    packs.export_pack(library, pack)
    monkeypatch.setattr(packs, "MAX_MANIFEST_BYTES", 100)
    with pytest.raises(packs.PackError, match="pack.json' claims"):
        packs.import_pack(_db(tmp_path / "d"), pack)


def test_truncated_and_garbage_files(library, tmp_path):
    pack = tmp_path / "p.fprefs"
    packs.export_pack(library, pack)
    cut = tmp_path / "cut.fprefs"
    cut.write_bytes(pack.read_bytes()[: pack.stat().st_size // 2])
    for p in (cut, tmp_path / "missing.fprefs", tmp_path):
        with pytest.raises(packs.PackError):
            packs.import_pack(_db(tmp_path / "d"), p)
    assert _names(tmp_path / "d") == set()


def test_failed_move_rolls_back(library, tmp_path, monkeypatch):
    pack = tmp_path / "p.fprefs"
    packs.export_pack(library, pack)
    d = tmp_path / "dst"
    real = os.replace
    calls = []

    def flaky(a, b):
        calls.append(b)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        return real(a, b)
    monkeypatch.setattr(packs.os, "replace", flaky)
    with pytest.raises(RefError, match="nothing was imported"):
        packs.import_pack(_db(d), pack)
    assert _names(d) == set() and [p.name for p in d.iterdir() if not p.name.startswith(".fpcatalog")] == []


def test_cli_export_import(library, tmp_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT), FPCORE_CACHE=str(tmp_path / "cache"))

    def run(*a, stdin=subprocess.DEVNULL):
        return subprocess.run([sys.executable, "-m", "fpcore", *map(str, a)], capture_output=True, text=True,
                              env=env, stdin=stdin, cwd=tmp_path)
    pack = tmp_path / "cli.fprefs"
    r = run("refs", "export", pack, "Child", "Grandchild", "--refs", library.user_dir)
    assert r.returncode == 0 and "exported 2 references" in r.stdout and "Base" in r.stderr
    r = run("refs", "import", pack, "--refs", tmp_path / "n", "--json")
    assert r.returncode == 0, r.stderr
    assert sorted(json.loads(r.stdout)["added"]) == ["Child", "Grandchild"]
    r = run("refs", "list", "--refs", tmp_path / "n", "--json")
    assert {x["name"] for x in json.loads(r.stdout)} >= {"Child", "Grandchild"}
    # not a terminal and no policy: refused with one line, exit 2
    d = tmp_path / "c"
    _db(d).add(library.refs["Base"].fp, "Child", family="unknown")
    r = run("refs", "import", pack, "--refs", d)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "--rename" in r.stderr
    r = run("refs", "import", pack, "--refs", d, "--rename")
    assert r.returncode == 0 and "renamed to 'Child (2)'" in r.stdout
    bad = tmp_path / "bad.fprefs"
    bad.write_bytes(b"PK\x03\x04" + os.urandom(200))
    r = run("refs", "import", bad, "--refs", d)
    assert r.returncode == 3 and len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr


def test_ui_imports_a_pack(library, tmp_path, space):
    from fpcore import ui
    pack = tmp_path / "p.fprefs"
    packs.export_pack(library, pack)
    d = _clashing(tmp_path, space)
    host = ui.StandaloneHost(refs_dir=d, cache_dir=tmp_path / "cache")

    class Upload:           # gradio 3 hands over a file object with .name; gradio 4 a path
        name = str(pack)
    msg = ui.import_pack(host, Upload(), "skip")
    assert "Imported **2**" in msg and "Skipped (name taken): Child" in msg
    assert ui.import_pack(host, str(pack), "rename").startswith("Imported **1**")
    assert set(ui.reference_names(host)) == {"Base", "Child", "Child (2)", "Grandchild"}
    bad = tmp_path / "bad.fprefs"
    bad.write_bytes(b"nonsense")
    msg = ui.import_pack(host, str(bad))
    assert msg.startswith("**Error**") and "not a reference pack" in msg and str(tmp_path) not in msg
    assert ui.import_pack(host, None).startswith("Choose")
