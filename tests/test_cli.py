"""The command line, as hosts and scripts use it (CONTRACT.md)."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from fpcore import synth
from fpcore.cli import main

ROOT = Path(__file__).resolve().parent.parent


def run(*args, env=None):
    e = dict(os.environ, **(env or {}))
    return subprocess.run([sys.executable, "-m", "fpcore", *map(str, args)], capture_output=True, text=True,
                          cwd=ROOT, env=e, timeout=300)


def test_identify_json_contract(zoo_dir, tmp_path):
    refs = tmp_path / "refs"
    r = run("refs", "add", zoo_dir / "Base.safetensors", "--name", "Base", "--refs", refs)
    assert r.returncode == 0, r.stderr
    r = run("refs", "add", zoo_dir / "Child.safetensors", "--name", "Child", "--parent", "Base", "--refs", refs)
    assert r.returncode == 0, r.stderr
    synth.write_safetensors(tmp_path / "ft.safetensors", synth.finetune(
        synth.random_state_dict(synth.checkpoint_spec("sd1", "tiny"), 1), 0.01, 3), "F16")
    r = run("identify", zoo_dir / "Child.safetensors", tmp_path / "ft.safetensors", "--json", "--refs", refs)
    assert r.returncode == 0, r.stderr
    reps = json.loads(r.stdout)
    assert [x["path"] for x in reps] == [str(zoo_dir / "Child.safetensors"), str(tmp_path / "ft.safetensors")]
    a, b = reps
    for rep in reps:
        for k in ("path", "sha256", "autov2", "format", "architecture", "verdict", "merge", "components",
                  "candidates", "metadata", "error"):
            assert k in rep
        assert set(rep["verdict"]) >= {"relation", "base", "lineage", "confidence", "summary"}
        assert rep["architecture"]["family"] == "sd1"
        assert rep["architecture"]["components"] == ["unet", "clip_l", "vae"]
        assert re.fullmatch(r"[0-9a-f]{64}", rep["sha256"]) and rep["autov2"] == rep["sha256"][:10]
    assert a["verdict"]["relation"] == "identical" and a["verdict"]["lineage"] == ["Base", "Child"]
    assert b["verdict"]["relation"] == "derivative" and b["verdict"]["base"] == "Base"


def test_bad_file_among_good_ones(zoo_dir, tmp_path):
    bad = tmp_path / "cut.safetensors"
    bad.write_bytes((zoo_dir / "Base.safetensors").read_bytes()[:5000])
    r = run("identify", bad, zoo_dir / "Base.safetensors", "--json", "--no-hash")
    assert r.returncode == 3
    reps = json.loads(r.stdout)
    assert reps[0]["error"] and str(bad) in reps[0]["error"]
    assert reps[1]["error"] is None
    lines = [l for l in r.stderr.splitlines() if l.strip()]
    assert len(lines) == 1 and str(bad) in lines[0] and "Traceback" not in r.stderr


def test_usage_error_exit_2():
    r = run("identify")
    assert r.returncode == 2
    r = run("refs", "remove", "nope")
    assert r.returncode == 2 and "no reference named" in r.stderr


def test_refs_list_remove_and_tree(zoo_dir, tmp_path, capsys):
    refs = str(tmp_path / "r")
    assert main(["refs", "add", str(zoo_dir / "Base.safetensors"), "--name", "Base", "--refs", refs, "--no-hash"]) == 0
    assert main(["refs", "add", str(zoo_dir / "Child.safetensors"), "--name", "Child", "--parent", "Base",
                 "--refs", refs, "--no-hash"]) == 0
    # duplicate name and cycles are refused
    assert main(["refs", "add", str(zoo_dir / "Child.safetensors"), "--name", "Child", "--refs", refs]) == 2
    capsys.readouterr()
    assert main(["refs", "list", "--json", "--refs", refs]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["Child"]["parent"] == "Base" and rows["Base"]["children"] == ["Child"]
    assert rows["Base"]["family"] == "sd1" and rows["Base"]["dtype"] == "fp16"
    assert main(["refs", "remove", "Base", "--refs", refs]) == 0
    capsys.readouterr()
    assert main(["refs", "list", "--json", "--refs", refs]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert set(rows) == {"Child"} and rows["Child"]["orphan"] is True


def test_inspect_why_and_hash(zoo_dir, capsys):
    assert main(["inspect", str(zoo_dir / "Base.safetensors"), "--why", "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)[0]
    assert rep["architecture"]["family"] == "sd1" and rep["rules"]["matched"] == "sd1"
    assert any(r["rule"] == "sdxl" and "label_emb" in r["why"] for r in rep["rules"]["rejected"])
    assert main(["hash", str(zoo_dir / "Base.safetensors"), "--json"]) == 0
    h = json.loads(capsys.readouterr().out)[0]
    import hashlib
    data = (zoo_dir / "Base.safetensors").read_bytes()
    assert h["sha256"] == hashlib.sha256(data).hexdigest()
    n = int.from_bytes(data[:8], "little")
    assert h["autov3"] == hashlib.sha256(data[8 + n:]).hexdigest()[:12]


def test_engine_is_host_free():
    """fpcore imports nothing from ComfyUI, A1111/Forge or gradio (ui builders get gradio passed in)."""
    forbidden = re.compile(r"^\s*(from|import)\s+(comfy|folder_paths|modules|launch|gradio|server|nodes)\b", re.M)
    for p in (ROOT / "fpcore").rglob("*.py"):
        assert not forbidden.search(p.read_text()), p
    code = "import sys, fpcore.cli, fpcore.identify; bad=[m for m in ('comfy','folder_paths','modules','gradio','launch') if m in sys.modules]; print(bad)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert out.stdout.strip() == "[]"


def test_library_does_not_print():
    for p in (ROOT / "fpcore").rglob("*.py"):
        if p.name in ("cli.py", "__main__.py"):
            continue
        assert not re.search(r"^\s*print\(", p.read_text(), re.M), p
