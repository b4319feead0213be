"""Whole-process cost of the command line, as a user waits for it: interpreter, imports and work.

    python bench/cli_startup.py [--repeat 5] [--baseline-commit 5db185a] [--sdxl PATH]
                                [--scan4 DIR] [--library N] [--work DIR]

Every row is a fresh process timed from outside (median of ``--repeat``); peak RSS (VmHWM) and
bytes read from storage (/proc/self/io) are read by the process itself when it ends. Run it in a
fresh venv with the newest versions the dependency ranges allow: the versions are printed first.

1. The import time of each dependency (``python -X importtime -c "import X"``, cumulative), and
   which of them a bare ``fpcore --help`` and an ``identify`` import.
2. The commands on a demo-size SD1 file, now against ``--baseline-commit`` (extracted from git;
   default: the release before the import work), in the same venv.
3. ``--sdxl PATH`` (the 6.94 GB file bench/speed.py writes), page cache dropped before each run:
   the starting approach (safetensors numpy backend, ten whole tensors, 16 statistics each) as a
   whole process, against ``fpcore identify --no-hash --no-cache`` now and at the baseline commit;
   and a repeat ``identify --hash`` of the unchanged file, answered from the store.
4. ``--scan4 DIR``: four full-size checkpoints (SDXL bf16 and 3 x SD1.5 fp16, random data, 13.3 GB,
   written once): one hashlib pass over them against ``fpcore scan DIR`` (empty store), cold cache.
5. ``--library N``: ``fpcore identify`` as a whole process against a library of N references
   (bench/refs_scale.py's), for its five files: a named fine-tune, 2- and 3-way merges, an
   unregistered child, an independent model; each answer checked against what was built.
"""
from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

DEPENDENCIES = ("numpy", "scipy", "safetensors", "tqdm", "gguf", "requests", "huggingface_hub", "ml_dtypes")
HEAVY = ("scipy", "gguf", "requests", "huggingface_hub", "ml_dtypes", "tqdm")
DIST = {"huggingface_hub": "huggingface-hub", "ml_dtypes": "ml-dtypes"}
CWD = tempfile.gettempdir()

#: runs a module as ``python -m`` does, then prints its peak RSS and bytes read on stderr's last line
WRAP = r"""
import runpy, sys
sys.argv = [sys.argv[1]] + sys.argv[2:]
def report():
    hwm = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM:"))
    io = dict(l.split(": ") for l in open("/proc/self/io").read().splitlines())
    sys.stderr.write(f"\n@@ {hwm / 1024:.1f} {int(io['read_bytes'])}\n")
try:
    runpy.run_module(sys.argv[0], run_name="__main__", alter_sys=True)
except SystemExit as e:
    report()
    raise
report()
"""


def run_once(argv: list[str], env: dict, before=None, ok=(0, 3)) -> dict:
    if before:
        before()
    t = time.perf_counter()
    r = subprocess.run(argv, env=env, capture_output=True, text=True, cwd=CWD)   # not this tree: PYTHONPATH decides
    dt = time.perf_counter() - t
    if r.returncode not in ok:
        raise SystemExit(f"{argv}: exit {r.returncode}: {r.stderr[-800:]}")
    m = re.search(r"@@ ([\d.]+) (\d+)\s*$", r.stderr)
    return {"s": dt, "rss": float(m.group(1)) if m else None, "read": int(m.group(2)) if m else None,
            "stdout": r.stdout}


def timed(argv: list[str], env: dict, repeat: int, before=None) -> dict:
    runs = sorted((run_once(argv, env, before) for _ in range(repeat)), key=lambda r: r["s"])
    med = runs[len(runs) // 2]
    return dict(med, all=[round(r["s"], 3) for r in runs])


#: a store emptied before each run where a row must not be answered from one
EMPTY_STORE = os.path.join(tempfile.gettempdir(), "fpcore-startup-empty-store")


def _empty_store(env: dict) -> dict:
    return dict(env, FPCORE_CACHE=EMPTY_STORE)


def _clear() -> None:
    shutil.rmtree(EMPTY_STORE, ignore_errors=True)


def fpcore(py: str, *args) -> list[str]:
    return [py, "-c", WRAP, "fpcore", *map(str, args)]


def extract(commit: str, into: str) -> str:
    tar = subprocess.run(["git", "-C", str(ROOT), "archive", commit, "fpcore"], capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", into], input=tar, check=True)
    return into


def versions() -> str:
    out = [f"Python {sys.version.split()[0]}"]
    for d in DEPENDENCIES:
        try:
            out.append(f"{d} {importlib.metadata.version(DIST.get(d, d))}")
        except importlib.metadata.PackageNotFoundError:
            out.append(f"{d} (not installed)")
    return ", ".join(out)


def import_times(py: str, env: dict, repeat: int) -> dict[str, float]:
    """Cumulative import time of each dependency in seconds (median over fresh processes)."""
    out = {}
    for mod in DEPENDENCIES:
        ts = []
        for _ in range(repeat):
            r = subprocess.run([py, "-X", "importtime", "-c", f"import {mod}"], env=env, capture_output=True, text=True)
            m = re.search(rf"\|\s*(\d+) \| {re.escape(mod)}\s*$", r.stderr, re.M)
            if m:
                ts.append(int(m.group(1)) / 1e6)
        if ts:
            out[mod] = statistics.median(ts)
    return out


def imported_by(py: str, env: dict, args: list[str]) -> list[str]:
    r = subprocess.run([py, "-X", "importtime", "-m", "fpcore", *args], env=env, capture_output=True, text=True, cwd=CWD)
    names = set(re.findall(r"\|\s*\d+ \|\s*([\w.]+)\s*$", r.stderr, re.M))
    return [m for m in HEAVY if m in names]


def section_imports(py: str, env: dict, model: str, repeat: int) -> None:
    print(f"\n### Versions\n\n{versions()}\n")
    print("### Import time of each dependency (`python -X importtime`, cumulative, median of "
          f"{repeat} processes)\n")
    print("| module | import time |\n|---|---|")
    for mod, s in import_times(py, env, repeat).items():
        print(f"| {mod} | {s * 1000:.0f} ms |")
    for label, a in (("--help", ["--help"]), ("identify --no-hash --no-cache FILE", ["identify", "--no-hash", "--no-cache", model])):
        got = imported_by(py, env, a)
        print(f"\n`fpcore {label}` imports of these: {', '.join(got) if got else 'none'}")


def section_commands(py: str, env: dict, model: str, base: str, commit: str, repeat: int) -> None:
    now_env = dict(env, PYTHONPATH=str(ROOT))
    old_env = dict(env, PYTHONPATH=base)
    commands = {
        "--version": ["--version"],
        "--help": ["--help"],
        "refs list": ["refs", "list"],
        "inspect FILE": ["inspect", model],
        "identify --no-hash FILE (answered from the store)": ["identify", "--no-hash", model],
        "identify --no-hash --no-cache FILE": ["identify", "--no-hash", "--no-cache", model],
    }
    for e in (now_env, old_env):   # fill each store once
        subprocess.run([py, "-m", "fpcore", "identify", "--no-hash", model], env=e, capture_output=True, cwd=CWD)
    floor = timed([py, "-c", "pass"], env, repeat)["s"]
    numpy = timed([py, "-c", "import numpy"], env, repeat)["s"]
    print(f"\n### Commands on a demo-size SD1 file (warm page cache)\n\ninterpreter alone: {floor * 1000:.0f} ms; "
          f"with numpy imported: {numpy * 1000:.0f} ms\n")
    print(f"| command | before ({commit}) | now | ratio |")
    print("|---|---|---|---|")
    for label, cmd in commands.items():
        # --no-cache rows: an empty store each time (before 4548903 --no-cache still used the store)
        fresh = "--no-cache" in cmd
        old = timed(fpcore(py, *cmd), _empty_store(old_env) if fresh else old_env, repeat, _clear if fresh else None)["s"]
        new = timed(fpcore(py, *cmd), _empty_store(now_env) if fresh else now_env, repeat, _clear if fresh else None)["s"]
        print(f"| `fpcore {label}` | {old * 1000:.0f} ms | {new * 1000:.0f} ms | {old / new:.1f}× |")


def section_sdxl(py: str, env: dict, path: str, base: str, commit: str, repeat: int, work: Path) -> None:
    import speed   # bench/speed.py: the starting approach and the page-cache drop
    size = os.path.getsize(path)
    drop = lambda: speed.drop_cache(path)  # noqa: E731
    code = speed.CHILD.format(root=str(ROOT), keys=speed.BASELINE_KEYS)
    refs = str(work / "sdxl-refs")
    now_env = dict(env, PYTHONPATH=str(ROOT), FPCORE_REFS=refs, FPCORE_CACHE=str(work / "sdxl-cache"))
    old_env = dict(env, PYTHONPATH=base, FPCORE_REFS=refs, FPCORE_CACHE=str(work / "sdxl-cache-old"))
    start = timed([py, "-c", code, "baseline", path, refs], env, repeat, drop)
    cold = lambda: (_clear(), drop())  # noqa: E731
    ours = timed(fpcore(py, "identify", "--no-hash", "--no-cache", path), _empty_store(now_env), repeat, cold)
    old = timed(fpcore(py, "identify", "--no-hash", "--no-cache", path), _empty_store(old_env), repeat, cold)
    print(f"\n### Whole process, {size / 1e9:.2f} GB SDXL file, page cache dropped before each run\n")
    print("| | wall time (median) | runs | read from storage | peak RSS |\n|---|---|---|---|---|")
    print(f"| starting approach (10 whole tensors, safetensors numpy backend) | {start['s']:.2f} s | {start['all']} | "
          "(see bench/speed.py) | |")
    for label, r in ((f"`fpcore identify --no-hash --no-cache` at {commit}", old),
                     ("`fpcore identify --no-hash --no-cache` now", ours)):
        print(f"| {label} | {r['s']:.3f} s ({start['s'] / r['s']:.1f}× faster) | {r['all']} | "
              f"{r['read'] / 1e6:.1f} MB ({100 * r['read'] / size:.2f} %) | {r['rss']:.0f} MB |")
    # a repeat identify --hash of the unchanged file: the store answers (the first one hashes)
    subprocess.run(fpcore(py, "identify", "--hash", path), env=now_env, capture_output=True, cwd=CWD)
    subprocess.run(fpcore(py, "identify", "--hash", path), env=old_env, capture_output=True, cwd=CWD)
    rep_now = timed(fpcore(py, "identify", "--hash", path), now_env, repeat)
    rep_old = timed(fpcore(py, "identify", "--hash", path), old_env, repeat)
    print(f"\nrepeat `identify --hash` of the unchanged file, answered from the store: {rep_now['s']:.3f} s now "
          f"{rep_now['all']}, {rep_old['s']:.3f} s at {commit} {rep_old['all']} (target <= 0.5 s); "
          f"read {rep_now['read'] / 1e6:.1f} MB")


#: the hash pass: bench/hashing.py's plain() loop, inlined so that its process imports nothing else
HASH_ALL = r"""
import hashlib, sys
for p in sys.argv[1:]:
    h = hashlib.sha256()
    with open(p, "rb", buffering=0) as f:
        while True:
            b = f.read(1 << 24)
            if not b:
                break
            h.update(b)
    print(p, h.hexdigest())
"""


def section_scan4(py: str, env: dict, folder: Path, repeat: int, work: Path) -> None:
    import first_scan
    import speed
    import testkit
    folder.mkdir(parents=True, exist_ok=True)
    files = []
    for i, (name, fam, dt) in enumerate(first_scan.BIG[:4]):
        p = folder / f"{name}.safetensors"
        if not p.exists():
            print(f"writing {p} ...", flush=True)
            testkit.write_spec_file(p, testkit.checkpoint_spec(fam, "full"), dt, fill="random", seed=100 + i)
        files.append(str(p))
    total = sum(os.path.getsize(p) for p in files)
    drop = lambda: [speed.drop_cache(p) for p in files]  # noqa: E731
    hashed = timed([py, "-c", HASH_ALL, *files], env, max(1, repeat // 2), drop)
    scans = []
    for i in range(repeat):
        store = work / f"scan4-cache-{i}"
        shutil.rmtree(store, ignore_errors=True)
        e = dict(env, PYTHONPATH=str(ROOT), FPCORE_REFS=str(work / "scan4-refs"), FPCORE_CACHE=str(store))
        scans.append(run_once(fpcore(py, "scan", folder), e, drop))
    scans.sort(key=lambda r: r["s"])
    s = scans[len(scans) // 2]
    print(f"\n### First scan of four full-size checkpoints ({total / 1e9:.2f} GB), cold page cache, empty store\n")
    print("| | wall time (median) | runs | peak RSS |\n|---|---|---|---|")
    print(f"| one hashlib pass over the files | {hashed['s']:.2f} s | {hashed['all']} | |")
    print(f"| `fpcore scan DIR` (whole process) | {s['s']:.2f} s ({100 * s['s'] / hashed['s']:.1f} % of the hash pass; "
          f"target <= 10 %) | {[round(r['s'], 2) for r in scans]} | {s['rss']:.0f} MB |")


def section_library(py: str, env: dict, n: int, repeat: int, work: Path) -> None:
    import refs_scale
    from testkit.library import Space
    space = Space("sdxl")
    lib, info = refs_scale.build(n, work, space)
    qdir = work / "queries"
    expect = refs_scale.write_queries(qdir, space)
    e = dict(env, PYTHONPATH=str(ROOT), FPCORE_REFS=str(lib), FPCORE_CACHE=str(work / "lib-cache"))
    print(f"\n### `fpcore identify` as a whole process against {n:,} references (median of {repeat})\n")
    print("| file | expected | wall time | runs | peak RSS | right |\n|---|---|---|---|---|---|")
    for q, want in expect.items():
        path = qdir / f"{q}.safetensors"
        r = timed(fpcore(py, "identify", "--no-hash", "--no-cache", "--json", path), _empty_store(e), repeat, _clear)
        rep = json.loads(r["stdout"])[0]
        got = {"relation": rep["verdict"]["relation"], "base": rep["verdict"]["base"],
               "merge": [(m["ref"], m["weight"]) for m in rep.get("merge") or []]}
        print(f"| {q} | {want['relation']} | {r['s']:.2f} s | {r['all']} | {r['rss']:.0f} MB | "
              f"{'yes' if refs_scale.check(got, want) else 'NO: ' + json.dumps(got)} |")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--baseline-commit", default="5db185a", help="the command line before this work")
    ap.add_argument("--sdxl", help="full-size SDXL file (bench/speed.py writes one) for the cold-cache comparison")
    ap.add_argument("--scan4", help="folder for four full-size checkpoints (13.3 GB, written once)")
    ap.add_argument("--library", type=int, default=0, help="library size for whole-process identify (e.g. 1000)")
    ap.add_argument("--work", default=os.path.join(tempfile.gettempdir(), "fpcore-startup"),
                    help="where libraries and stores are kept between runs")
    args = ap.parse_args(argv)
    from fpcore.cli import demo
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix="fpcore-startup-")
    try:
        model = os.path.join(tmp, "m.safetensors")
        demo.write_safetensors(model, demo.random_model(demo.sd1_spec(), 3))
        env = dict(os.environ, FPCORE_REFS=os.path.join(tmp, "refs"), FPCORE_CACHE=os.path.join(tmp, "cache"))
        env.pop("PYTHONPATH", None)
        base = extract(args.baseline_commit, tempfile.mkdtemp(prefix="fpcore-base-", dir=tmp))
        py = sys.executable
        section_imports(py, dict(env, PYTHONPATH=str(ROOT)), model, args.repeat)
        section_commands(py, env, model, base, args.baseline_commit, args.repeat)
        if args.sdxl:
            section_sdxl(py, env, args.sdxl, base, args.baseline_commit, args.repeat, work)
        if args.scan4:
            section_scan4(py, env, Path(args.scan4), args.repeat, work)
        if args.library:
            section_library(py, env, args.library, args.repeat, work)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
