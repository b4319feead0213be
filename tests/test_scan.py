"""Folder scan: duplicates, precision copies, merges between files, tags, report, bad files."""
from __future__ import annotations

import json
import os
import shutil
import stat

import numpy as np
import pytest

import testkit
from fpcore.cli import main
from fpcore.scan import find_models, public, scan_folder
from fpcore.refs.library import RefDB


@pytest.fixture(scope="module")
def folder(tmp_path_factory, lineage):
    """~20 small models: a duplicate, a precision copy, a merge of two folder models, a LoRA,
    a broken file, a sidecar with user notes, a read-only file, a subfolder, a symlink loop."""
    d = tmp_path_factory.mktemp("models")
    (d / "sub" / "deeper").mkdir(parents=True)
    base, child, other = lineage["Base"], lineage["Child"], lineage["Other"]
    w = testkit.write_safetensors
    w(d / "base.safetensors", base, "F16")
    w(d / "child.safetensors", child, "F16")
    w(d / "sub" / "other.safetensors", other, "F16")
    shutil.copy(d / "child.safetensors", d / "sub" / "child_copy.safetensors")          # duplicate
    w(d / "child_bf16.safetensors", {k: testkit.convert(v, "F16").astype(np.float32) if v.dtype == np.float32 else v
                                     for k, v in child.items()}, "BF16")              # same weights, bf16
    w(d / "mix.safetensors", testkit.merge([(child, 0.4), (other, 0.6)]), "F16")        # merge of two folder models
    for i in range(8):
        w(d / "sub" / "deeper" / f"ft{i}.safetensors", testkit.finetune(child, 0.02 + 0.01 * i, 100 + i), "F16")
    w(d / "indep.safetensors", lineage["Indep"], "F16")
    w(d / "indep_ft.safetensors", testkit.finetune(lineage["Indep"], 0.03, 5), "F16")
    # a LoRA with kohya key names
    rng = np.random.default_rng(0)
    lora = {}
    for blk in ("input_blocks_1_1_proj_in", "output_blocks_3_1_proj_out"):
        lora[f"lora_unet_{blk}.lora_down.weight"] = rng.standard_normal((4, 32)).astype(np.float32)
        lora[f"lora_unet_{blk}.lora_up.weight"] = rng.standard_normal((32, 4)).astype(np.float32)
        lora[f"lora_unet_{blk}.alpha"] = np.array(4.0, np.float32)
    w(d / "style_lora.safetensors", lora, "F16", metadata={"ss_base_model_version": "sd_v1"})
    (d / "broken.safetensors").write_bytes((d / "base.safetensors").read_bytes()[:4096])   # cut download
    (d / "empty.ckpt").write_bytes(b"")
    # a sidecar with the user's notes
    (d / "child.json").write_text(json.dumps({"description": "my favourite", "notes": "keep me", "sd version": "SD1"}))
    # a read-only model
    w(d / "readonly.safetensors", testkit.finetune(base, 0.05, 77), "F16")
    os.chmod(d / "readonly.safetensors", 0o444)
    os.symlink(d / "sub", d / "sub" / "deeper" / "loop")                                  # symlink loop
    return d


@pytest.fixture(scope="module")
def result(folder, tmp_path_factory):
    cache = tmp_path_factory.mktemp("cache")
    refs = tmp_path_factory.mktemp("refs")
    return scan_folder(folder, db=RefDB(refs, builtin_dir=refs / "none"), cache_dir=cache)


def by_name(result):
    return {os.path.relpath(r["path"], result["root"]): r for r in result["reports"]}


def test_finds_every_model_once(folder, result):
    files, errors = find_models(folder)
    rel = sorted(os.path.relpath(f, folder) for f in files)
    assert len(rel) == 20 and len(set(rel)) == 20
    assert "sub/deeper/ft0.safetensors" in rel and not any("loop" in r for r in rel)


def test_bad_files_are_reported_not_fatal(result):
    r = by_name(result)
    assert "truncated" in r["broken.safetensors"]["error"] and "broken.safetensors" in r["broken.safetensors"]["error"]
    assert r["empty.ckpt"]["error"]
    assert r["readonly.safetensors"]["error"] is None


def test_duplicates_and_precision_copies_are_grouped(folder, result):
    groups = {(g["relation"], tuple(sorted(os.path.relpath(p, folder) for p in g["paths"]))): g for g in result["groups"]}
    ident = groups[("identical", ("child.safetensors", "sub/child_copy.safetensors"))]
    assert ident["reclaimable_bytes"] == os.path.getsize(folder / "child.safetensors")
    same = [g for (rel, paths), g in groups.items() if rel == "same_weights"]
    assert len(same) == 1
    assert set(os.path.relpath(p, folder) for p in same[0]["paths"]) == {
        "child.safetensors", "sub/child_copy.safetensors", "child_bf16.safetensors"}


def test_relations_within_the_folder(result):
    r = by_name(result)
    mix = r["mix.safetensors"]["folder"]
    assert mix["relation"] == "merge"
    got = {os.path.basename(m["ref"]): m["weight"] for m in mix["merge"]}
    # either copy of the child's weights may be named (the same weights in fp16 and bf16)
    assert abs(got.get("child.safetensors", 0) - 0.4) <= 0.05 or abs(got.get("child_bf16.safetensors", 0) - 0.4) <= 0.05
    assert abs(got["other.safetensors"] - 0.6) <= 0.05
    ft = r["sub/deeper/ft3.safetensors"]["folder"]
    assert ft["relation"] == "related" and os.path.basename(ft["peer"]).startswith("child")
    assert r["indep_ft.safetensors"]["folder"]["peer"].endswith("indep.safetensors")
    assert r["base.safetensors"]["folder"]["relation"] in ("related", "unknown")


def test_tags_merge_into_existing_sidecar(folder, tmp_path):
    work = tmp_path / "m"
    shutil.copytree(folder, work, symlinks=True)
    refs = tmp_path / "refs"
    res = scan_folder(work, db=RefDB(refs, builtin_dir=refs / "none"), cache_dir=tmp_path / "c", write_tags=True,
                      dry_run=True)
    assert not (work / "base.json").exists()                      # dry run writes nothing
    assert any(t["changes"] for t in res["tags"])
    res = scan_folder(work, db=RefDB(refs, builtin_dir=refs / "none"), cache_dir=tmp_path / "c", write_tags=True)
    side = json.loads((work / "child.json").read_text())
    assert side["notes"] == "keep me" and side["description"] == "my favourite"     # user keys kept
    assert side["sd_version_str"] == "SdVersion.SD1" and side["relation"] == "unknown"
    assert side["fingerprint_version"] >= 1 and "lineage" in side and "base_model" in side
    backup = json.loads((work / "child.json.bak").read_text())
    assert backup == {"description": "my favourite", "notes": "keep me", "sd version": "SD1"}
    assert json.loads((work / "base.json").read_text())["sd_version_str"] == "SdVersion.SD1"
    assert not (work / "broken.json").exists()
    # a second run changes nothing and keeps the first backup
    (work / "child.json.bak").write_text('{"first": "backup"}')
    res = scan_folder(work, db=RefDB(refs, builtin_dir=refs / "none"), cache_dir=tmp_path / "c", write_tags=True)
    assert json.loads((work / "child.json.bak").read_text()) == {"first": "backup"}
    assert all(not t["changes"] for t in res["tags"] if "error" not in t)


def test_invalid_sidecar_is_left_alone(folder, tmp_path):
    work = tmp_path / "m"
    work.mkdir()
    shutil.copy(folder / "base.safetensors", work / "a.safetensors")
    (work / "a.json").write_text("{not json")
    res = scan_folder(work, db=RefDB(tmp_path / "r", builtin_dir=tmp_path / "n"), cache_dir=tmp_path / "c",
                      write_tags=True)
    assert (work / "a.json").read_text() == "{not json"
    assert "not valid JSON" in res["tags"][0]["error"]


def test_second_run_uses_the_cache(folder, tmp_path, monkeypatch):
    refs, cache = tmp_path / "r", tmp_path / "c"
    scan_folder(folder, db=RefDB(refs, builtin_dir=refs / "n"), cache_dir=cache)
    from fpcore import identify as ident

    def boom(*a, **k):
        raise AssertionError("a second scan must not hash")
    monkeypatch.setattr(ident, "hash_file", boom)
    res = scan_folder(folder, db=RefDB(refs, builtin_dir=refs / "n"), cache_dir=cache)
    ok = [r for r in res["reports"] if not r["error"]]
    assert ok and all(r["stats"].get("cached") == "report" for r in ok)


def test_rescan_serves_groups_from_the_store_until_the_folder_changes(folder, tmp_path, monkeypatch):
    """An unchanged folder: the same groups and folder relations, without comparing files again.
    A changed folder (a file added): compared again."""
    from fpcore.scan import groups as scan_groups   # where _cached_groups looks _groups up
    work = tmp_path / "m"
    shutil.copytree(folder, work, symlinks=True, ignore=shutil.ignore_patterns("readonly*"))
    refs, cache = tmp_path / "r", tmp_path / "c"
    db = lambda: RefDB(refs, builtin_dir=refs / "n")  # noqa: E731
    first = scan_folder(work, db=db(), cache_dir=cache)
    calls = []
    real = scan_groups._groups
    monkeypatch.setattr(scan_groups, "_groups", lambda *a, **k: calls.append(1) or real(*a, **k))
    again = scan_folder(work, db=db(), cache_dir=cache)
    assert calls == []
    assert again["groups"] == first["groups"] and any(g["relation"] == "same_weights" for g in again["groups"])
    assert {r["path"]: r.get("folder") for r in again["reports"]} == {r["path"]: r.get("folder") for r in first["reports"]}
    shutil.copy(work / "base.safetensors", work / "base_again.safetensors")
    third = scan_folder(work, db=db(), cache_dir=cache)
    assert calls == [1]
    assert any(g["relation"] == "identical" and str(work / "base_again.safetensors") in g["paths"]
               for g in third["groups"])


def test_cli_scan_json_and_report(folder, tmp_path, capsys):
    out = tmp_path / "report.html"
    code = main(["scan", str(folder), "--json", "--report", str(out), "--refs", str(tmp_path / "r")])
    assert code == 3                                   # bad files present
    data = json.loads(capsys.readouterr().out)
    assert set(data) >= {"reports", "groups"} and len(data["reports"]) == 20
    assert all(set(g) >= {"relation", "paths", "reclaimable_bytes"} for g in data["groups"])
    page = out.read_text()
    assert "<svg" in page and "Family tree" in page and "child.safetensors" in page
    assert "http" not in page.replace("http://www.w3.org/2000/svg", "")      # self-contained


def test_empty_folder(tmp_path, capsys):
    (tmp_path / "e").mkdir()
    assert main(["scan", str(tmp_path / "e"), "--json"]) == 4          # nothing to do
    assert json.loads(capsys.readouterr().out)["reports"] == []
    assert main(["scan", str(tmp_path / "missing")]) == 3


def test_scan_sees_other_formats(tmp_path, lineage):
    """A diffusers folder is one model, a .ckpt copy is the same weights as its .safetensors."""
    d = tmp_path / "m"
    d.mkdir()
    testkit.write_safetensors(d / "child.safetensors", lineage["Child"], "F16")
    testkit.write_torch_ckpt(d / "child.ckpt", lineage["Child"], "F16")
    testkit.write_diffusers(d / "child_diffusers", lineage["Child"], "sd1")
    refs = tmp_path / "r"
    res = scan_folder(d, db=RefDB(refs, builtin_dir=refs / "n"), cache_dir=tmp_path / "c")
    r = by_name(res)
    assert set(r) == {"child.safetensors", "child.ckpt", "child_diffusers"}
    assert all(x["error"] is None for x in r.values()), [x["error"] for x in r.values()]
    assert r["child_diffusers"]["format"] == "diffusers" and r["child.ckpt"]["format"] == "ckpt"
    same = [g for g in res["groups"] if g["relation"] == "same_weights"]
    assert len(same) == 1 and len(same[0]["paths"]) == 3
