"""The command line, as hosts and scripts use it (docs/json-format.md)."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import testkit
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
    testkit.write_safetensors(tmp_path / "ft.safetensors", testkit.finetune(
        testkit.random_state_dict(testkit.checkpoint_spec("sd1", "tiny"), 1), 0.01, 3), "F16")
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
        assert rep["hash"] in ("computed", "not computed")
    # the copy of a reference is hashed to call it identical; the fine-tune needs no hash
    assert re.fullmatch(r"[0-9a-f]{64}", a["sha256"]) and a["autov2"] == a["sha256"][:10] and a["hash"] == "computed"
    assert b["sha256"] is None and b["autov2"] is None and b["hash"] == "not computed"
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
        if p.relative_to(ROOT).as_posix() in ("fpcore/cli/__init__.py", "fpcore/cli/output.py", "fpcore/__main__.py"):
            continue
        assert not re.search(r"^\s*print\(", p.read_text(), re.M), p


# ------------------------------------------------------------------ command-line manners (issue 14)

@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory):
    """The `fpcore demo` folder: generated models with a known ancestry and registered references."""
    d = tmp_path_factory.mktemp("demo")
    r = run("demo", d, "--json")
    assert r.returncode == 0, r.stderr
    return d, json.loads(r.stdout)


def test_demo_finds_what_was_built(demo_dir):
    d, res = demo_dir
    got = {os.path.basename(r["path"]): r for r in res["reports"]}
    v = {n: r["verdict"] for n, r in got.items() if not r.get("error")}
    assert v["base.safetensors"]["relation"] == "identical" and v["base.safetensors"]["base"] == "Demo Base 1.0"
    assert v["base_copy.safetensors"]["relation"] == "identical"
    assert v["base_bf16.safetensors"]["relation"] == "same_weights"
    assert v["anime_v2.safetensors"]["relation"] == "derivative" and v["anime_v2.safetensors"]["base"] == "Demo Anime"
    assert v["anime_v2.safetensors"]["lineage"] == ["Demo Base 1.0", "Demo Anime"]
    mix = {m["ref"]: m["weight"] for m in got["anime_photo_mix.safetensors"]["merge"]}
    assert v["anime_photo_mix.safetensors"]["relation"] == "merge"
    assert abs(mix["Demo Anime"] - 0.6) < 0.05 and abs(mix["Demo Photo"] - 0.4) < 0.05
    assert v["scratch.safetensors"]["relation"] == "unknown"
    assert got["broken.safetensors"]["error"]
    assert res["summary"]["models"] == 6 and res["summary"]["unreadable"] == 1
    assert (d / "report.html").stat().st_size > 1000


def test_scan_text_summary_and_one_line_per_bad_file(demo_dir, tmp_path):
    d, res = demo_dir
    env = {"FPCORE_REFS": str(d / "refs"), "FPCORE_CACHE": str(tmp_path / "c")}
    r = run("scan", d / "models", "--report", tmp_path / "r.html", env=env)
    assert r.returncode == 3                       # one unreadable file
    err = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(err) == 1 and "broken.safetensors" in err[0] and "Traceback" not in r.stderr
    assert "broken" not in r.stdout                # said once, on stderr only
    from fpcore.facts import format_bytes
    total = res["summary"]["reclaimable_bytes"]
    assert re.search(rf"^6 models, 1 unreadable, \d+ groups?, {re.escape(format_bytes(total))} reclaimable$",
                     r.stdout, re.M), r.stdout
    html = (tmp_path / "r.html").read_text()
    assert format_bytes(total) in html and "MiB" not in html   # the same decimal figure in the report
    assert "★ base.safetensors (= Demo Base 1.0)" in html          # a file that is a reference is starred


def test_scan_lines_say_relation_and_base_once(demo_dir, tmp_path):
    """'merge merge: ...' and 'unknown unknown' were printed (issue 23): each per-file line reads
    'FILE: FAMILY | RELATION PHRASE', with the demo's recipe (0.6 / 0.4, as built)."""
    d, _ = demo_dir
    env = {"FPCORE_REFS": str(d / "refs"), "FPCORE_CACHE": str(tmp_path / "c")}
    r = run("scan", d / "models", env=env)
    lines = {ln.split(":", 1)[0]: ln.split(" | folder: ")[0] for ln in r.stdout.splitlines() if ".safetensors:" in ln}
    assert lines["anime_photo_mix.safetensors"] == \
        "anime_photo_mix.safetensors: SD1.x | merge: Demo Anime 60% + Demo Photo 40%"
    assert lines["scratch.safetensors"] == "scratch.safetensors: SD1.x | unknown base"
    assert lines["anime_v2.safetensors"].startswith("anime_v2.safetensors: SD1.x | derivative of Demo Anime")
    assert lines["base_bf16.safetensors"].startswith("base_bf16.safetensors: SD1.x | same weights as Demo Base 1.0")
    assert not re.search(r"\b(\w+) \1\b", r.stdout), r.stdout


def test_summary_of_an_unknown_architecture_reads_as_english():
    """'A unknown-architecture model ...' (issue 23): no summary starts with a wrong article."""
    import types
    from fpcore.identify import _summary
    from fpcore.match.decisions import Code
    a = types.SimpleNamespace(family="unknown", dtype="F16")
    for code in (None, *(v for k, v in vars(Code).items() if k.isupper())):
        for n_family in (0, 2):
            s = _summary("unknown", None, [], {}, a, n_family, "a reason", code)
            assert not re.match(r"A [aeiouAEIOU]", s), s


@pytest.mark.parametrize("command", [["identify", "--no-hash"], ["hash"]])
def test_no_cache_neither_reads_nor_writes_the_store(zoo_dir, tmp_path, command):
    """`--no-cache` ("neither read nor write the fingerprint store") opened the default store all
    the same: a second identify answered from it without reading the file (issue 23's bench)."""
    cache = tmp_path / "cache"
    env = {"FPCORE_CACHE": str(cache), "FPCORE_REFS": str(tmp_path / "refs")}
    r = run(*command, "--no-cache", zoo_dir / "Child.safetensors", env=env)
    assert r.returncode == 0, r.stderr
    assert not cache.exists() or not any(cache.rglob("*")), sorted(cache.rglob("*"))


def test_identify_bad_file_once(demo_dir):
    d, _ = demo_dir
    env = {"FPCORE_REFS": str(d / "refs")}
    r = run("identify", d / "models" / "broken.safetensors", d / "models" / "scratch.safetensors", "--no-hash", env=env)
    assert r.returncode == 3
    assert len(r.stderr.strip().splitlines()) == 1 and "broken.safetensors" in r.stderr
    assert "broken" not in r.stdout and "scratch.safetensors" in r.stdout


def test_nothing_to_scan_and_wrong_paths(tmp_path):
    (tmp_path / "empty").mkdir()
    r = run("scan", tmp_path / "empty")
    assert r.returncode == 4 and "no model files found" in r.stderr and not r.stdout.strip()
    r = run("scan", tmp_path / "nope")
    assert r.returncode == 3 and "no such directory" in r.stderr and "Traceback" not in r.stderr
    (tmp_path / "f.safetensors").write_bytes(b"x")
    r = run("scan", tmp_path / "f.safetensors")
    assert r.returncode == 3 and "fpcore identify" in r.stderr
    r = run("identify", tmp_path / "empty")
    assert r.returncode == 3 and "fpcore scan" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    r = run("identify", tmp_path / "missing.safetensors")
    assert r.returncode == 3 and "no such file" in r.stderr and "Traceback" not in r.stderr
    r = run("--debug", "identify", tmp_path / "missing.safetensors")
    assert "Traceback" in r.stderr                 # --debug still shows it


def test_closed_pipe_is_quiet(demo_dir):
    d, _ = demo_dir
    p = subprocess.Popen([sys.executable, "-m", "fpcore", "refs", "list", "--json", "--refs", str(d / "refs")],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT)
    p.stdout.close()                               # like `| head` that has read enough
    err = p.stderr.read().decode()
    assert p.wait(60) == 141 and "Traceback" not in err and not err.strip(), err


def test_ctrl_c_is_one_line(tmp_path):
    import signal
    import time
    # a command that is still working when Ctrl-C comes (the real demo can finish first on a fast machine)
    # SIGINT's default handler restored first: a test runner started in the background inherits it ignored
    code = ("import signal, sys, time\n"
            "signal.signal(signal.SIGINT, signal.default_int_handler)\n"
            "import dataclasses, fpcore.cli\n"
            "def busy(args):\n"
            "    print('working', file=sys.stderr, flush=True)\n"
            "    time.sleep(60)\n"
            "fpcore.cli.COMMANDS['demo'] = dataclasses.replace(fpcore.cli.COMMANDS['demo'], run=busy)\n"
            f"sys.exit(fpcore.cli.main(['demo', {str(tmp_path / 'd')!r}]))\n")
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT,
                         text=True)
    assert p.stderr.readline().strip() == "working"  # inside main(), in the command
    time.sleep(0.2)
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=120)
    assert p.returncode == 130 and "Traceback" not in err and "interrupted" in err, err


def test_busy_port_and_unsupported_gradio(tmp_path):
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        r = run("ui", "--port", port)
    assert r.returncode == 2 and f"127.0.0.1:{port}" in r.stderr and "--port" in r.stderr
    assert "Traceback" not in r.stderr
    fake = tmp_path / "fake"
    (fake / "gradio").mkdir(parents=True)
    (fake / "gradio" / "__init__.py").write_text("__version__ = '6.0.1'\n")
    r = run("ui", env={"PYTHONPATH": str(fake)})
    assert r.returncode == 2 and "gradio 6.0.1 is not supported" in r.stderr


def test_progress_phases_move_forward(demo_dir, tmp_path):
    d, _ = demo_dir
    from fpcore import api
    from fpcore.cli import output as cli_output
    seen = []
    res = api.scan_folder(d / "models", refs_dir=d / "refs", cache_dir=tmp_path / "c",
                          phase=lambda name, done, total: seen.append((name, done, total)))
    names = [n for n, _, _ in seen]
    order = [cli_output.Phases.ORDER.index(n) for n in names]
    assert order == sorted(order) and "comparing" in names
    comparing = [(dn, t) for n, dn, t in seen if n == "comparing"]
    assert [dn for dn, _ in comparing] == sorted(dn for dn, _ in comparing) and comparing[-1][0] == comparing[-1][1]
    assert res["reports"]

    class Bar:   # stands in for tqdm: records what would be drawn
        def __init__(self, total=0, desc="", **kw):
            self.total, self.n, self.desc, self.drawn = total, 0, desc, []
            bars.append(self)

        def refresh(self):
            self.drawn.append(self.n)

        def set_postfix_str(self, s, refresh=True):
            pass

        def close(self):
            pass
    bars = []
    ph = cli_output.Phases()
    ph.tqdm = Bar
    ph.bytes(50, 100)
    ph.bytes(30, 100)          # a late callback of a parallel hash: the bar does not go back
    ph.phase("hashing", 10, 20)  # confirming the hashes of files that may be identical
    ph.phase("comparing", 1, 4)
    ph.bytes(90, 100)          # a callback of an earlier phase: ignored, the label stays
    ph.phase("hashing", 20, 20)
    ph.phase("comparing", 4, 4)
    ph.close()
    assert [b.desc for b in bars] == ["hashing & fingerprinting", "hashing", "comparing"]
    assert bars[0].drawn == [50, 50] and bars[1].drawn == [10] and bars[2].drawn == [1, 4]


def test_commands_are_a_table_with_shared_options():
    from fpcore import cli
    p = cli.build_parser()
    a = p.parse_args(["identify", "x", "--json", "--refs", "R", "--cache", "C", "--debug"])
    assert (a.json, a.refs, a.cache, a.debug, a._run) == (True, "R", "C", True, cli._identify)
    a = p.parse_args(["--debug", "scan", "d"])
    assert a.debug is True and a._run is cli._scan
    for name, c in cli.COMMANDS.items():
        assert c.run or c.sub, name


def test_help_is_light_and_points_inside_the_repo():
    code = ("import sys, fpcore.cli as c\ntry:\n    c.main(['--help'])\nexcept SystemExit:\n    pass\n"
            "print([m for m in ('numpy', 'scipy', 'fpcore.identify', 'fpcore.match') if m in sys.modules])")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert r.stdout.strip().endswith("[]"), r.stdout    # --help imports no engine module
    assert "docs/json-format.md" in r.stdout.replace("-\n", "-").replace("\n", " ")
    assert (ROOT / "docs" / "json-format.md").is_file()
    for p in [ROOT / "README.md", *ROOT.joinpath("docs").glob("*.md"), *ROOT.joinpath("fpcore").rglob("*.py")]:
        assert "CONTRACT.md" not in p.read_text(encoding="utf-8"), p
