"""Reference libraries of thousands (issue 17): the candidate index against exhaustive matching.

    python bench/refs_scale.py [--sizes 100,1000] [--exhaustive 12,25,50] [--big 10000]
                               [--repeat 3] [--exhaustive-repeat 1] [--out DIR] [--ann DIR]

Builds libraries of N references (testkit.library: reduced-width SDXL siblings in a tree three
levels deep, a hub with half of them as children, plus SD1.5 and unknown-architecture ones),
written with ``RefDB.add`` like ``refs add`` does. Five files are identified (real safetensors
files read by the normal reader):

* light  a 2 % fine-tune of a registered sibling                 -> derivative of it
* merge2 0.6/0.4 merge of two siblings                           -> merge, weights within 0.05
* merge3 0.5/0.3/0.2 merge of three siblings                     -> merge, weights within 0.05
* unreg  a 2 % fine-tune of an unregistered sibling of the hub's children -> derivative of the hub, no merge
* indep  an independent SDXL-layout model                        -> unknown

Each (mode, N) runs in a fresh process: ``index`` is the default (FPCORE_REFINDEX=auto),
``exhaustive`` the full analysis of every reference as before (FPCORE_REFINDEX=never). Per
file: wall time in process after a warm-up identify of an unrelated SD1.5 file (imports are
not what is compared); p50/p95 over ``repeat`` rounds; peak RSS of the process; library load
time (catalog present), and the first load that builds the catalog. Peak RSS is VmHWM of
the measuring process. Also: ``refs list``
through the command line, one ``refs add`` into the library, the forward-selection gains that
calibrate sketchindex.SELECT_MIN_GAIN, and (``--ann DIR``: a folder with faiss-cpu/usearch
installed, e.g. ``pip install --target DIR faiss-cpu usearch``) exact numpy search against
approximate indexes on the library's own sketches.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

QUERIES = ("light", "merge2", "merge3", "unreg", "indep")

CHILD = r"""
import json, os, sys, time
sys.path.insert(0, {root!r})
def hwm():  # peak RSS of this process (ru_maxrss would include the parent's, kept across exec)
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
lib, qdir, repeat, want = sys.argv[1], sys.argv[2], int(sys.argv[3]), json.loads(sys.argv[4])
from fpcore.refs.library import RefDB
from fpcore.identify import identify
import fpcore.refs.sketchindex as ri
traces = {{}}
real_fs = ri.forward_select
cur = [None]
def fs(*a, **k):
    t = []
    out = real_fs(*a, **k, trace=t)
    traces.setdefault(cur[0], []).extend(t)
    return out
ri.forward_select = fs
t0 = time.perf_counter()
db = RefDB(lib, builtin_dir=os.path.join(lib, "none"))
n = len(db.refs)
load = time.perf_counter() - t0
cur[0] = "warm"
identify(os.path.join(qdir, "warm.safetensors"), db, hashes=False)
times = {{q: [] for q in want}}
reps = {{}}
for r in range(repeat):
    for q in want:
        cur[0] = q
        t = time.perf_counter()
        rep = identify(os.path.join(qdir, q + ".safetensors"), db, hashes=False)
        times[q].append(time.perf_counter() - t)
        if r == 0:
            v = rep["verdict"]
            reps[q] = {{"relation": v["relation"], "base": v["base"],
                       "merge": [(m["ref"], m["weight"]) for m in rep["merge"]]}}
print(json.dumps({{"refs": n, "load": load, "times": times, "reports": reps,
                  "rss_mb": hwm(),
                  "traces": traces}}))
"""

ADD_CHILD = r"""
import json, os, sys, time
sys.path.insert(0, {root!r})
lib, src = sys.argv[1], sys.argv[2]
from fpcore.refs.library import RefDB
from fpcore.identify import add_reference
t = time.perf_counter()
db = RefDB(lib, builtin_dir=os.path.join(lib, "none"))
add_reference(db, src, "bench-added", parent="Line-0", hashes=False)
dt = time.perf_counter() - t
db.remove("bench-added")
print(json.dumps({{"add": dt}}))
"""

ANN_CHILD = r"""
import json, os, sys, time
sys.path.insert(0, {root!r})
sys.path.append(sys.argv[2])
import numpy as np
lib = sys.argv[1]
from fpcore.refs.library import RefDB
import fpcore.refs.sketchindex as ri
db = RefDB(lib, builtin_dir=os.path.join(lib, "none"))
M = db.index.mats["unet"]
rng = np.random.default_rng(0)
qs = M[rng.integers(0, len(M), 50)] + rng.normal(0, 0.01, (50, M.shape[1])).astype(np.float32)
K = 16
def timeit(f):
    t = time.perf_counter()
    out = [f(q) for q in qs]
    return (time.perf_counter() - t) / len(qs) * 1e3, out
res = {{}}
ms, exact = timeit(lambda q: ri.top_k(ri.matvec(M, q), K))
res["numpy exact (fpcore)"] = {{"query_ms": ms, "build_s": 0.0, "recall": 1.0}}
def recall(out):
    return float(np.mean([len(set(map(int, a)) & set(map(int, b))) / K for a, b in zip(out, exact)]))
try:
    import faiss
    faiss.omp_set_num_threads(1)
    t = time.perf_counter(); fi = faiss.IndexFlatIP(M.shape[1]); fi.add(M); b = time.perf_counter() - t
    ms, out = timeit(lambda q: fi.search(q[None], K)[1][0])
    res["faiss IndexFlatIP"] = {{"query_ms": ms, "build_s": b, "recall": recall(out)}}
    t = time.perf_counter(); fh = faiss.IndexHNSWFlat(M.shape[1], 32, faiss.METRIC_INNER_PRODUCT); fh.add(M)
    b = time.perf_counter() - t
    ms, out = timeit(lambda q: fh.search(q[None], K)[1][0])
    res["faiss HNSW"] = {{"query_ms": ms, "build_s": b, "recall": recall(out)}}
except ImportError as e:
    res["faiss"] = {{"error": str(e)}}
try:
    from usearch.index import Index
    t = time.perf_counter(); ui = Index(ndim=M.shape[1], metric="ip", dtype="f16")
    ui.add(np.arange(len(M)), M); b = time.perf_counter() - t
    ms, out = timeit(lambda q: ui.search(q, K).keys)
    res["usearch HNSW f16"] = {{"query_ms": ms, "build_s": b, "recall": recall(out)}}
except ImportError as e:
    res["usearch"] = {{"error": str(e)}}
print(json.dumps({{"n": len(M), "dim": M.shape[1], "results": res}}))
"""


def run_child(code: str, args: list[str], env: dict | None = None, timeout: float = 3600) -> dict | None:
    try:
        out = subprocess.run([sys.executable, "-c", code.format(root=str(ROOT)), *args], capture_output=True,
                             text=True, env={**os.environ, **(env or {})}, timeout=timeout)
    except subprocess.TimeoutExpired:
        return None
    if out.returncode != 0:
        print(out.stderr[-3000:], file=sys.stderr)
        return None
    return json.loads(out.stdout.strip().splitlines()[-1])


def build(n: int, out: Path, space) -> tuple[Path, dict]:
    """The library of n references under out/lib-n (kept between runs)."""
    from fpcore.refs.library import RefDB
    from testkit.library import build_library
    d = out / f"lib-{n}"
    done = d / "complete.json"
    if done.exists():
        return d, json.loads(done.read_text())
    shutil.rmtree(d, ignore_errors=True)
    db = RefDB(d, builtin_dir=d / "none")
    adds = []

    def each(name, parent, family, fp):
        t = time.perf_counter()
        db.add(fp, name, parent=parent, family=family)
        adds.append(time.perf_counter() - t)
    t0 = time.perf_counter()
    build_library(n, space, each=each)
    info = {"n": n, "build_s": time.perf_counter() - t0, "add_first100_ms": 1e3 * sum(adds[:100]) / len(adds[:100]),
            "add_last100_ms": 1e3 * sum(adds[-100:]) / len(adds[-100:])}
    done.write_text(json.dumps(info))
    return d, info


def write_queries(qdir: Path, space) -> dict:
    """The five query files and what each must give."""
    import testkit
    from testkit.library import Space, build_library
    qdir.mkdir(parents=True, exist_ok=True)
    lib = build_library(40, space, each=lambda *a: None)    # the same hub and siblings as any size
    S, v = lib.siblings, lib.values
    expect = {
        "light": {"relation": "derivative", "base": S[0]},
        "merge2": {"relation": "merge", "merge": {S[1]: 0.6, S[2]: 0.4}},
        "merge3": {"relation": "merge", "merge": {S[3]: 0.5, S[4]: 0.3, S[5]: 0.2}},
        "unreg": {"relation": "derivative", "base": lib.hub},
        "indep": {"relation": "unknown", "base": None},
    }
    if not (qdir / "expect.json").exists():
        space.write_model(qdir / "light.safetensors", space.finetune(v[S[0]], 0.02, 91))
        space.write_model(qdir / "merge2.safetensors", space.merge([(v[S[1]], 0.6), (v[S[2]], 0.4)]))
        space.write_model(qdir / "merge3.safetensors", space.merge([(v[S[3]], 0.5), (v[S[4]], 0.3), (v[S[5]], 0.2)]))
        unreg = space.finetune(v[lib.hub], 0.08, 555)            # a sibling never registered
        space.write_model(qdir / "unreg.safetensors", space.finetune(unreg, 0.02, 556))
        ind = Space("sdxl", seed=99)
        ind.write_model(qdir / "indep.safetensors", ind.base)
        testkit.write_safetensors(qdir / "warm.safetensors",
                                  testkit.random_state_dict(testkit.checkpoint_spec("sd1", "tiny"), 5), "F16")
        space.write_model(qdir / "added.safetensors", space.finetune(v[lib.hub], 0.07, 777))
        (qdir / "expect.json").write_text(json.dumps(expect))
    return expect


def check(rep: dict, want: dict) -> bool:
    if rep["relation"] != want["relation"]:
        return False
    if "base" in want and rep["base"] != want["base"]:
        return False
    got = dict(rep["merge"])
    if "merge" in want:
        return set(got) == set(want["merge"]) and all(abs(got[k] - w) <= 0.05 for k, w in want["merge"].items())
    return not got


def applicable(want: dict, names: set) -> bool:
    """Whether the library holds the references the expected answer names (a small one may not)."""
    return all(n in names for n in (*want.get("merge", {}), *([want["base"]] if want.get("base") else [])))


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="100,1000", help="library sizes measured with the index")
    ap.add_argument("--exhaustive", default="12,25,50", help="sizes also measured with exhaustive matching")
    ap.add_argument("--big", default="", help="extra large size(s), index only (e.g. 10000)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--exhaustive-repeat", type=int, default=1, help="rounds for exhaustive runs (they are slow)")
    ap.add_argument("--out", default=os.path.join(tempfile.gettempdir(), "fpcore-refs-scale"))
    ap.add_argument("--ann", default="", help="folder with faiss-cpu / usearch installed (optional comparison)")
    ap.add_argument("--timeout", type=float, default=1200, help="seconds per exhaustive run before it is given up")
    args = ap.parse_args(argv)
    from testkit.library import Space
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    space = Space("sdxl")
    expect = write_queries(out / "queries", space)
    ints = lambda s: [int(x) for x in s.split(",") if x.strip()]   # noqa: E731
    idx_sizes, exh_sizes, big = ints(args.sizes), ints(args.exhaustive), ints(args.big)
    sizes = sorted(set(idx_sizes + exh_sizes + big))
    rows = {}
    for n in sizes:
        d, info = build(n, out, space)
        print(f"library of {n}: built in {info['build_s']:.0f} s; one add {info['add_first100_ms']:.0f} ms "
              f"(first 100) / {info['add_last100_ms']:.0f} ms (last 100)", flush=True)
        for f in (d / ".fpcatalog",):
            if f.exists():
                f.unlink()
        t = time.perf_counter()
        cold = run_child("import sys,os; sys.path.insert(0,{root!r}); from fpcore.refs.library import RefDB; "
                         "print(len(RefDB(sys.argv[1], builtin_dir=os.path.join(sys.argv[1],'none')).refs))", [str(d)])
        info["catalog_build_s"] = time.perf_counter() - t
        from fpcore.refs.library import RefDB
        names = set(RefDB(d, builtin_dir=d / "none").refs)
        info["applicable"] = [q for q in QUERIES if applicable(expect[q], names)]
        env_cli = {"PYTHONPATH": str(ROOT), "FPCORE_CACHE": str(out / "cache")}
        t = time.perf_counter()
        subprocess.run([sys.executable, "-m", "fpcore", "refs", "list", "--json", "--refs", str(d)],
                       capture_output=True, env={**os.environ, **env_cli}, check=True)
        info["refs_list_s"] = time.perf_counter() - t
        a = run_child(ADD_CHILD, [str(d), str(out / "queries" / "added.safetensors")])
        info["refs_add_s"] = a["add"] if a else None
        row = {"info": info}
        modes = [("index", "auto")] + ([("exhaustive", "never")] if n in exh_sizes else [])
        if n not in idx_sizes and n not in big:
            modes = [m for m in modes if m[0] != "index"] + [("index", "auto")]
        for mode, val in modes:
            rep_n = args.exhaustive_repeat if mode == "exhaustive" else args.repeat
            r = run_child(CHILD, [str(d), str(out / "queries"), str(rep_n), json.dumps(list(QUERIES))],
                          env={"FPCORE_REFINDEX": val}, timeout=args.timeout if mode == "exhaustive" else 3600)
            row[mode] = r
            if r:
                allt = [x for q in QUERIES for x in r["times"][q]]
                app = info["applicable"]
                ok = sum(check(r["reports"][q], expect[q]) for q in app)
                print(f"  {mode:10s} load {r['load']:.3f} s, per file p50 {pct(allt, 50):.3f} s p95 {pct(allt, 95):.3f} s, "
                      f"peak RSS {r['rss_mb']:.0f} MB, right {ok}/{len(app)}", flush=True)
            else:
                print(f"  {mode:10s} did not finish within {args.timeout:.0f} s", flush=True)
        rows[n] = row
        if args.ann and n == max(sizes):
            row["ann"] = run_child(ANN_CHILD, [str(d), args.ann])
    # -- tables ----------------------------------------------------------------------------------
    print("\n| references | index: per file p50 / p95 | index: peak RSS | exhaustive: per file p50 / p95 | "
          "exhaustive: peak RSS | library load (catalog present / first, building it) | refs list (CLI) | refs add |")
    print("|---|---|---|---|---|---|---|---|")
    for n, row in rows.items():
        cells = []
        for mode in ("index", "exhaustive"):
            r = row.get(mode)
            if r:
                allt = [x for q in QUERIES for x in r["times"][q]]
                cells += [f"{pct(allt, 50):.2f} / {pct(allt, 95):.2f} s", f"{r['rss_mb']:.0f} MB"]
            else:
                cells += ["not run" if mode not in row else "did not finish", "—"]
        i = row["info"]
        load = row["index"]["load"] if row.get("index") else None
        cells += [f"{load:.2f} s / {i['catalog_build_s']:.1f} s" if load is not None else "—",
                  f"{i['refs_list_s']:.2f} s", f"{i['refs_add_s']:.2f} s" if i["refs_add_s"] else "—"]
        print(f"| {n} | " + " | ".join(cells) + " |")
    print("\nverdicts (✓ = as expected):")
    for n, row in rows.items():
        for mode in ("index", "exhaustive"):
            r = row.get(mode)
            if not r:
                continue
            parts = []
            for q in QUERIES:
                rep = r["reports"][q]
                m = " + ".join(f"{k} {w:.2f}" for k, w in rep["merge"]) if rep["merge"] else rep["base"]
                mark = ("✓" if check(rep, expect[q]) else "✗") if q in row["info"]["applicable"] else "n/a (not registered)"
                parts.append(f"{q}: {mark} {rep['relation']} {m}")
            print(f"  {n:6d} {mode:10s} " + "; ".join(parts))
    print("\nforward selection (share of the residual the best next reference removes; "
          f"SELECT_MIN_GAIN = {__import__('fpcore.refs.sketchindex').refs.sketchindex.SELECT_MIN_GAIN}):")
    for n, row in rows.items():
        r = row.get("index")
        if not r:
            continue
        acc = [g for q in ("merge2", "merge3") for _, g, a in r["traces"].get(q, []) if a]
        rej = [g for q in QUERIES for _, g, a in r["traces"].get(q, []) if not a]
        print(f"  {n:6d}: smallest accepted (true members) {min(acc) if acc else float('nan'):.3f}; "
              f"largest rejected {max(rej) if rej else float('nan'):.3f}")
    for n, row in rows.items():
        if row.get("ann"):
            a = row["ann"]
            print(f"\nnearest-neighbour search on {a['n']} real UNet index vectors of {a['dim']} floats (k=16, 1 thread):")
            print("| method | build | query | recall@16 vs exact |")
            print("|---|---|---|---|")
            for k, v in a["results"].items():
                if "error" in v:
                    print(f"| {k} | not installed | | |")
                else:
                    print(f"| {k} | {v['build_s']:.3f} s | {v['query_ms']:.3f} ms | {v['recall']:.3f} |")
    (out / "results.json").write_text(json.dumps(rows, indent=1, default=str))
    print(f"\nraw figures: {out / 'results.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
