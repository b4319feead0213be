"""Hash throughput and cache timings, each against its baseline in the same run.

    python bench/hashing.py [--file PATH] [--size-gb 2] [--repeat 3]

* throughput of fpcore.sources.hashing.hash_file (SHA-256 + AutoV3 in one pass) vs a plain
  ``hashlib.sha256`` loop over the same file, with a cold and a warm page cache;
* first ``identify`` of a new file (empty store, cold cache) vs hashing alone;
* repeat ``identify`` of the unchanged file: time inside the process, and the CLI's
  wall time next to the interpreter's own start-up.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import testkit  # noqa: E402
from fpcore.sources.hashing import hash_file  # noqa: E402
from fpcore.identify import identify  # noqa: E402
from fpcore.refs.library import RefDB  # noqa: E402
from fpcore.store import Store  # noqa: E402
from speed import drop_cache  # noqa: E402  (bench/ is on sys.path when run as a script)


def plain(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb", buffering=0) as f:
        while True:
            b = f.read(8 << 20)
            if not b:
                break
            h.update(b)
    return h.hexdigest()


def timed(fn, *a, **k):
    t = time.perf_counter()
    r = fn(*a, **k)
    return time.perf_counter() - t, r


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--file", help="an existing model file (default: build an SDXL-shaped one)")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="fphash-"))
    path = args.file
    if not path:
        path = str(Path(tempfile.gettempdir()) / "fpcore-bench" / "sdxl_full_fp16_random.safetensors")
        if not os.path.exists(path):
            os.makedirs(os.path.dirname(path), exist_ok=True)
            testkit.write_spec_file(path, testkit.checkpoint_spec("sdxl", "full"), "F16", fill="random")
    size = os.path.getsize(path)
    print(f"file: {path} ({size / 1e9:.2f} GB)")
    rows = {"plain hashlib (cold)": [], "fpcore hash_file (cold)": [], "plain hashlib (warm)": [],
            "fpcore hash_file (warm)": []}
    for _ in range(args.repeat):
        for cold in (True, False):
            tag = "cold" if cold else "warm"
            if cold:
                drop_cache(path)
            t, ref = timed(plain, path)
            rows[f"plain hashlib ({tag})"].append(t)
            if cold:
                drop_cache(path)
            t, h = timed(hash_file, path)
            assert h.sha256 == ref
            rows[f"fpcore hash_file ({tag})"].append(t)
    med = {k: sorted(v)[len(v) // 2] for k, v in rows.items()}
    print("\n| what | median time | throughput |")
    print("|---|---|---|")
    for k, v in med.items():
        print(f"| {k} | {v:.2f} s | {size / v / 1e6:.0f} MB/s |")
    for tag in ("cold", "warm"):
        print(f"hash_file / plain throughput ({tag}): "
              f"{med[f'plain hashlib ({tag})'] / med[f'fpcore hash_file ({tag})']:.2f}x")

    # first identify vs hash alone (cold, empty store), then the repeat
    db = RefDB(tmp / "refs", builtin_dir=tmp / "none")
    firsts, hashes = [], []
    for i in range(args.repeat):
        drop_cache(path)
        hashes.append(timed(hash_file, path)[0])
        drop_cache(path)
        firsts.append(timed(identify, path, db, store=Store(tmp / f"cache{i}"))[0])
    store = Store(tmp / "cache0")
    repeats = [timed(identify, path, db, store=store)[0] for _ in range(5)]
    fh, ff = sorted(hashes)[len(hashes) // 2], sorted(firsts)[len(firsts) // 2]
    print(f"\nfirst identify (cold, empty store): {ff:.2f} s; hash alone: {fh:.2f} s; ratio {ff / fh:.3f}")
    print(f"repeat identify (in process): median {sorted(repeats)[2] * 1000:.1f} ms")
    env = dict(os.environ, FPCORE_CACHE=str(tmp / "cache0"), FPCORE_REFS=str(tmp / "refs"))
    cli, bare = [], []
    for _ in range(5):
        cli.append(timed(subprocess.run, [sys.executable, "-m", "fpcore", "identify", path, "--json"],
                         capture_output=True, cwd=ROOT, env=env, check=True)[0])
        bare.append(timed(subprocess.run, [sys.executable, "-c", "import numpy, ml_dtypes, sqlite3"],
                          capture_output=True, check=True)[0])
    c, b = sorted(cli)[2], sorted(bare)[2]
    print(f"repeat identify (CLI wall): {c * 1000:.0f} ms; interpreter + numpy start-up alone: {b * 1000:.0f} ms; "
          f"difference {1000 * (c - b):.0f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
