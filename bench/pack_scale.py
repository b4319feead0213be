"""Identify against a reference pack of 10,000 (issue 26): the pack carries every reference's
sketches, so the imported library's index picks the few references a file can be related to
without reading the others' fingerprints.

    python bench/pack_scale.py [--refs 10000] [--repeat 3] [--out DIR]

The pack is generated once (testkit.library: reduced-width SDXL siblings in a tree three levels
deep, plus SD1.5 and unknown-architecture ones, the library bench/refs_scale.py measures) and
written with ``fpcore.refs.packs.write_pack``, as ``fpcore index`` writes its packs. Then, each in a
fresh process:

* ``refs import PACK`` into an empty reference dir: time and peak RSS;
* the first load of the library (its catalog built from the .fpref files' sketch members) and a
  load with the catalog present: time, and how many fingerprints were read (none should be);
* identify of the five files of bench/refs_scale.py (a light fine-tune, 2- and 3-way merges, a
  fine-tune of an unregistered sibling, an independent model): time per file p50 / p95 after a
  warm-up, peak RSS, fingerprints read per identify, and whether each verdict is right.

Peak RSS is VmHWM of the measuring process.
"""
from __future__ import annotations

import argparse
import json
import os
import queue
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

IMPORT = r"""
import json, os, sys, time
sys.path.insert(0, {root!r})
def hwm():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
from fpcore import cli
t = time.perf_counter()
code = cli.main(["refs", "import", sys.argv[1]])
print(json.dumps({{"code": code, "seconds": time.perf_counter() - t, "rss_mb": hwm()}}))
"""

LOAD_AND_IDENTIFY = r"""
import json, os, sys, time
sys.path.insert(0, {root!r})
def hwm():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
lib, qdir, repeat, queries = sys.argv[1], sys.argv[2], int(sys.argv[3]), json.loads(sys.argv[4])
from fpcore.refs import fpref
reads = [0]
real = fpref.read_fingerprint
def counted(*a, **k):
    reads[0] += 1
    return real(*a, **k)
fpref.read_fingerprint = counted
from fpcore.refs.library import RefDB
from fpcore.identify import identify
t = time.perf_counter()
db = RefDB(lib, builtin_dir=os.path.join(lib, "none"))
n = len(db.refs)
db.index
load = time.perf_counter() - t
load_reads = reads[0]
identify(os.path.join(qdir, "warm.safetensors"), db, hashes=False)
times, per, reps = {{q: [] for q in queries}}, {{}}, {{}}
for r in range(repeat):
    for q in queries:
        before = reads[0]
        if r == 0:
            db._fps.clear()   # the first round counts every fingerprint read (the LRU emptied)
        t = time.perf_counter()
        rep = identify(os.path.join(qdir, q + ".safetensors"), db, hashes=False)
        times[q].append(time.perf_counter() - t)
        if r == 0:
            per[q] = reads[0] - before
            v = rep["verdict"]
            reps[q] = {{"relation": v["relation"], "base": v["base"],
                       "merge": [(m["ref"], m["weight"]) for m in rep["merge"]]}}
print(json.dumps({{"refs": n, "load": load, "load_reads": load_reads, "times": times, "reads": per,
                  "reports": reps, "rss_mb": hwm()}}))
"""


def build_pack(n: int, path: Path, space) -> dict:
    """The pack of n generated references (kept between runs), streamed: never all in memory."""
    from fpcore.refs.packs import write_pack
    from fpcore.refs.fpref import encode_reference
    from testkit.library import build_library
    info_path = path.with_suffix(".json")
    if path.exists() and info_path.exists():
        return json.loads(info_path.read_text())
    q: queue.Queue = queue.Queue(maxsize=64)
    done = object()

    def produce():
        try:
            build_library(n, space, each=lambda name, parent, family, fp: q.put(
                ({"name": name, "parent": parent, "family": family},
                 encode_reference({"name": name, "parent": parent, "family": family, "origin": "pack"}, fp))))
        finally:
            q.put(done)

    def items():
        while True:
            x = q.get()
            if x is done:
                return
            yield x

    t = time.perf_counter()
    threading.Thread(target=produce, daemon=True).start()
    entries = write_pack(path, items())
    info = {"refs": len(entries), "build_s": time.perf_counter() - t, "bytes": path.stat().st_size}
    info_path.write_text(json.dumps(info))
    return info


def run_child(code: str, args: list[str], env: dict | None = None) -> dict | None:
    out = subprocess.run([sys.executable, "-c", code.format(root=str(ROOT)), *args], capture_output=True, text=True,
                         env={**os.environ, **(env or {})}, timeout=7200)
    if out.returncode != 0:
        print(out.stderr[-3000:], file=sys.stderr)
        return None
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    import shutil
    from refs_scale import QUERIES, check, pct, write_queries
    from testkit.library import Space
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--refs", type=int, default=10000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--out", default=os.path.join(tempfile.gettempdir(), "fpcore-pack-scale"))
    ap.add_argument("--keep", action="store_true", help="keep the pack and the imported library")
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    space = Space("sdxl")
    expect = write_queries(out / "queries", space)
    pack = out / f"pack-{args.refs}.fprefs"
    info = build_pack(args.refs, pack, space)
    print(f"pack of {info['refs']} references: {info['bytes'] / 1e9:.2f} GB, generated in {info['build_s']:.0f} s",
          flush=True)
    lib = out / "lib"
    shutil.rmtree(lib, ignore_errors=True)
    cache = out / "cache"
    env = {"FPCORE_REFS": str(lib), "FPCORE_CACHE": str(cache)}
    imp = run_child(IMPORT, [str(pack)], env)
    print(f"refs import: {imp['seconds']:.1f} s, peak RSS {imp['rss_mb']:.0f} MB (exit {imp['code']})", flush=True)
    first = run_child(LOAD_AND_IDENTIFY, [str(lib), str(out / "queries"), "0", "[]"], env)
    print(f"first load (catalog built from the sketches): {first['load']:.1f} s, {first['load_reads']} fingerprints "
          f"read, {first['refs']} references", flush=True)
    r = run_child(LOAD_AND_IDENTIFY, [str(lib), str(out / "queries"), str(args.repeat), json.dumps(list(QUERIES))],
                  env)
    allt = [x for q in QUERIES for x in r["times"][q]]
    ok = [q for q in QUERIES if check(r["reports"][q], expect[q])]
    print(f"load with the catalog: {r['load']:.2f} s, {r['load_reads']} fingerprints read")
    print(f"identify: p50 {pct(allt, 50):.2f} s, p95 {pct(allt, 95):.2f} s, peak RSS {r['rss_mb']:.0f} MB, "
          "fingerprints read per file " + ", ".join(f"{q} {r['reads'][q]}" for q in QUERIES) + f"; right {len(ok)}/5")
    print("\n| references in the pack | pack size | refs import (time / peak RSS) | first load: catalog from the "
          "sketches (time / fingerprints read) | identify p50 / p95 | identify peak RSS | fingerprints read per "
          "identify | verdicts right |")
    print("|---|---|---|---|---|---|---|---|")
    reads = [r["reads"][q] for q in QUERIES]
    print(f"| {info['refs']:,} | {info['bytes'] / 1e9:.2f} GB | {imp['seconds']:.0f} s / {imp['rss_mb']:.0f} MB | "
          f"{first['load']:.1f} s / {first['load_reads']} | {pct(allt, 50):.2f} / {pct(allt, 95):.2f} s | "
          f"{r['rss_mb']:.0f} MB | {min(reads)}-{max(reads)} of {info['refs']:,} | {len(ok)}/5 |")
    for q in QUERIES:
        rep = r["reports"][q]
        m = " + ".join(f"{k} {w:.2f}" for k, w in rep["merge"]) if rep["merge"] else rep["base"]
        print(f"  {q}: {'✓' if q in ok else '✗'} {rep['relation']} {m}")
    (out / "results.json").write_text(json.dumps({"pack": info, "import": imp, "first": first, "identify": r},
                                                 indent=1))
    if not args.keep:
        shutil.rmtree(lib, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
