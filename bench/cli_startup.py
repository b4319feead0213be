"""Whole-process time of the command line: interpreter, imports and work, as a user waits for it.

    python bench/cli_startup.py [--repeat 7] [--sdxl PATH] [--baseline-commit 7c5dd47]

Each row is the median wall time of ``--repeat`` fresh processes. Compared in the same run:

* the command line as it was before the per-command imports (``--baseline-commit``, extracted
  from git into a temp dir), and the current one, on the same commands:
  ``--version``, ``--help``, ``inspect``, ``identify --no-hash`` answered from the store,
  ``identify --no-hash --no-cache`` (fingerprint and match) of a demo-size SD1 file;
* with ``--sdxl PATH`` (the 6.94 GB file bench/speed.py writes), page cache dropped before each
  run: the starting approach (safetensors numpy backend, ten whole tensors, 16 statistics each,
  bench/speed.py's baseline) as a whole process, against ``fpcore identify --no-hash --no-cache``.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def timed(cmd: list[str], env: dict, repeat: int, before=None) -> float:
    ts = []
    for _ in range(repeat):
        if before:
            before()
        t = time.perf_counter()
        r = subprocess.run(cmd, env=env, capture_output=True, text=True)
        ts.append(time.perf_counter() - t)
        if r.returncode not in (0, 3):
            raise SystemExit(f"{cmd}: exit {r.returncode}: {r.stderr[-500:]}")
    return statistics.median(ts)


def extract(commit: str, into: str) -> str:
    tar = subprocess.run(["git", "-C", str(ROOT), "archive", commit, "fpcore"], capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", into], input=tar, check=True)
    return into


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--sdxl", help="full-size SDXL file (bench/speed.py writes one) for the cold-cache comparison")
    ap.add_argument("--baseline-commit", default="7c5dd47", help="the command line before this work")
    args = ap.parse_args(argv)
    from fpcore import demo
    tmp = tempfile.mkdtemp(prefix="fpcore-startup-")
    model = os.path.join(tmp, "m.safetensors")
    demo.write_safetensors(model, demo.random_model(demo.sd1_spec(), 3))
    env = dict(os.environ, FPCORE_REFS=os.path.join(tmp, "refs"), FPCORE_CACHE=os.path.join(tmp, "cache"))
    base = extract(args.baseline_commit, tempfile.mkdtemp(prefix="fpcore-base-"))
    py = sys.executable
    now_env = dict(env, PYTHONPATH=str(ROOT))
    old_env = dict(env, PYTHONPATH=base)
    commands = {
        "--version": ["--version"],
        "--help": ["--help"],
        "inspect FILE": ["inspect", model],
        "identify --no-hash FILE (answered from the store)": ["identify", "--no-hash", model],
        "identify --no-hash --no-cache FILE": ["identify", "--no-hash", "--no-cache", model],
    }
    for e in (now_env, old_env):   # fill each store once
        subprocess.run([py, "-m", "fpcore", "identify", "--no-hash", model], env=e, capture_output=True)
    floor = timed([py, "-c", "pass"], env, args.repeat)
    numpy = timed([py, "-c", "import numpy"], env, args.repeat)
    print(f"interpreter alone: {floor * 1000:.0f} ms; with numpy imported: {numpy * 1000:.0f} ms "
          f"(median of {args.repeat} processes)\n")
    print(f"| command (demo-size SD1 file, warm page cache) | before ({args.baseline_commit}) | now | ratio |")
    print("|---|---|---|---|")
    for label, cmd in commands.items():
        old = timed([py, "-m", "fpcore", *cmd], old_env, args.repeat)
        new = timed([py, "-m", "fpcore", *cmd], now_env, args.repeat)
        print(f"| `fpcore {label}` | {old * 1000:.0f} ms | {new * 1000:.0f} ms | {old / new:.1f}× |")
    if args.sdxl:
        import speed   # bench/speed.py: the starting approach and the page-cache drop
        code = speed.CHILD.format(root=str(ROOT), keys=speed.BASELINE_KEYS)
        refs = tempfile.mkdtemp(prefix="fpcore-startup-refs-")
        drop = lambda: speed.drop_cache(args.sdxl)  # noqa: E731
        start = timed([py, "-c", code, "baseline", args.sdxl, refs], env, args.repeat, drop)
        ours = timed([py, "-m", "fpcore", "identify", "--no-hash", "--no-cache", args.sdxl], now_env, args.repeat, drop)
        size = os.path.getsize(args.sdxl) / 1e9
        print(f"\nwhole process, {size:.2f} GB SDXL file, page cache dropped before each run:")
        print("| | wall time |\n|---|---|")
        print(f"| starting approach (10 whole tensors, safetensors numpy backend) | {start:.2f} s |")
        print(f"| `fpcore identify --no-hash --no-cache` | {ours:.3f} s ({start / ours:.0f}× faster) |")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    sys.exit(main())
