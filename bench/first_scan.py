"""First scan at fingerprint speed (issue 15): hash-everything against the new default, side by side.

    python bench/first_scan.py [--dir DIR] [--big-only | --small-only] [--small N] [--check N] [--keep]

(1) A folder of eight full-size checkpoints with real key layouts and random weights (written
    with real data, not sparse): one SDXL bf16 and seven SD1.5 fp16 (21.9 GB).
    Each scan runs in a fresh process with an empty store and every file dropped from the page
    cache (posix_fadvise DONTNEED): ``hash_policy="always"`` (what every scan did before: hash
    each file, then fingerprint it) against the default. Prints wall time, bytes read from
    storage (/proc/self/io read_bytes) and by the process (rchar), and peak RSS.
(2) A folder of N (1,000) small generated checkpoints (SD1 UNet layout at reduced width): 20
    bases, fine-tunes and fine-tunes of fine-tunes, byte copies, fp32/bf16 copies, merges. The
    first scan (empty store) with the time of each phase, the rescan of the unchanged folder,
    and on a folder of ``--check`` files from the same generator the groups and in-folder
    relations against the exhaustive comparison (every file compared in full with every other).

The folders are written under DIR (default: a temp dir) and removed unless --keep.
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from speed import drop_cache  # noqa: E402  (bench/ is on sys.path when run as a script)

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

BIG = [("sdxl_bf16", "sdxl", "BF16")] + [(f"sd15_fp16_{i}", "sd1", "F16") for i in range(7)]

CHILD = r"""
import json, os, sys, time
sys.path.insert(0, {root!r})
def hwm():  # peak RSS of this process (ru_maxrss would include the parent's, kept across exec)
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
from fpcore.refs.library import RefDB
from fpcore.scan import scan_folder
import fpcore.scan.peers as pursuit
pursued = []                     # files compared in full per file, as the pursuit chose them
real_omp = pursuit._omp_all
def omp_all(*a, **k):
    out = real_omp(*a, **k)
    pursued.extend(len(x) for x in out)
    return out
pursuit._omp_all = omp_all
policy, folder, cache, peers = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
db = RefDB(os.path.join(cache, "refs"), builtin_dir=os.path.join(cache, "none"))
def io():
    with open("/proc/self/io") as f:
        return {{k: int(v) for k, v in (l.split(": ") for l in f.read().splitlines())}}
marks = {{}}
def phase(name, done, total):
    marks.setdefault(name, time.perf_counter())
io0 = io()
t0 = time.perf_counter()
res = scan_folder(folder, db=db, cache_dir=os.path.join(cache, "store"), hash_policy=policy, phase=phase,
                  peer_candidates=peers)
t1 = time.perf_counter()
io1 = io()
order = ["hashing", "comparing", "grouping"]
starts = [("fingerprinting", t0)] + [(n, marks[n]) for n in order if n in marks] + [("end", t1)]
phases = {{starts[i][0]: starts[i + 1][1] - starts[i][1] for i in range(len(starts) - 1)}}
out = {{"seconds": t1 - t0, "read_bytes": io1["read_bytes"] - io0["read_bytes"], "rchar": io1["rchar"] - io0["rchar"],
       "maxrss_mb": hwm(), "phases": phases,
       "peers_mean": sum(pursued) / len(pursued) if pursued else None,
       "hashed": sum(1 for r in res["reports"] if r.get("hash") == "computed"),
       "errors": sum(1 for r in res["reports"] if r.get("error")),
       "groups": sorted((g["relation"], tuple(sorted(os.path.basename(p) for p in g["paths"]))) for g in res["groups"]),
       "relations": {{os.path.basename(r["path"]): [(r.get("folder") or {{}}).get("relation"),
                      os.path.basename((r.get("folder") or {{}}).get("peer") or ""),
                      sorted((os.path.basename(m["ref"]), round(m["weight"], 2))
                             for m in (r.get("folder") or {{}}).get("merge", []))] for r in res["reports"]}}}}
print(json.dumps(out))
"""


def child(policy: str, folder: Path, cache: Path, peers: int = 8, cold: bool = True) -> dict:
    if cold:
        for f in folder.rglob("*.safetensors"):
            drop_cache(str(f))
    cache.mkdir(parents=True, exist_ok=True)
    code = CHILD.format(root=str(ROOT))
    out = subprocess.run([sys.executable, "-c", code, policy, str(folder), str(cache), str(peers)],
                         capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(f"scan failed: {out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def build_big(folder: Path) -> int:
    import testkit
    folder.mkdir(parents=True, exist_ok=True)
    total = 0
    for i, (name, fam, dt) in enumerate(BIG):
        p = folder / f"{name}.safetensors"
        if not p.exists():
            testkit.write_spec_file(p, testkit.checkpoint_spec(fam, "full"), dt, fill="random", seed=100 + i)
        total += p.stat().st_size
    return total


#: fine-tunes kept in memory as sources for more fine-tunes, copies and merges
MEMORY_POOL = 60


def build_small(folder: Path, n: int, seed: int = 0) -> dict:
    """n small checkpoints: bases, fine-tunes (some of fine-tunes), byte copies, fp32/bf16 copies, merges.
    Returns what each file is: name -> ("base",) | ("copy", of) | ("precision", of) |
    ("merge", a, weight a, b, weight b) | ("finetune", of)."""
    import numpy as np
    import testkit
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    spec = testkit.checkpoint_spec("sd1", "tiny", components=("unet",))
    n_bases = max(2, n // 50)
    made: list[tuple[str, dict]] = []

    def put(name, sd, dt="F16"):
        testkit.write_safetensors(folder / f"{name}.safetensors", sd, dt)
    bases = [testkit.random_state_dict(spec, 1000 + b) for b in range(n_bases)]
    truth: dict[str, tuple] = {}
    for b, sd in enumerate(bases):
        put(f"base{b:02d}", sd)
        made.append((f"base{b:02d}", sd))
        truth[f"base{b:02d}"] = ("base",)
    count = n_bases
    written = [name for name, _ in made]
    while count < n:
        kind = rng.random()
        src_name, src = made[rng.integers(len(made))]
        name = f"m{count:04d}"
        if kind < 0.06:                                     # a byte copy of any file written so far
            of = written[rng.integers(len(written))]
            shutil.copy(folder / f"{of}.safetensors", folder / f"{name}.safetensors")
            truth[name] = ("copy", of)
        elif kind < 0.12:                                   # another precision
            put(name, src, "F32" if rng.random() < 0.5 else "BF16")
            truth[name] = ("precision", src_name)
        elif kind < 0.20 and len(made) > 2:                 # a merge of two
            other_name, other = made[rng.integers(len(made))]
            w = float(rng.choice([0.3, 0.5, 0.7]))
            put(name, testkit.merge([(src, w), (other, 1 - w)]))
            truth[name] = ("merge", src_name, w, other_name, round(1 - w, 2))
        else:                                               # a fine-tune (of a base or of a fine-tune)
            sd = testkit.finetune(src, float(rng.uniform(0.03, 0.08)), int(rng.integers(1 << 30)))
            put(name, sd)
            made.append((name, sd))
            truth[name] = ("finetune", src_name)
            if len(made) > n_bases + MEMORY_POOL:           # bounded memory: the bases and recent fine-tunes
                del made[n_bases]
        written.append(name)
        count += 1
    return truth


#: a merge's weights as found may differ from the recipe by this much (bench/zoo.py's tolerance)
WEIGHT_TOLERANCE = 0.05


def accuracy(relations: dict, truth: dict) -> tuple[dict, list]:
    """Folder relations against what the generator made: a byte copy has its source's entry (one
    content) or is the same weights as some file, a precision copy is the same weights as some
    file; a merge of two different models is a merge of those two (or of
    their copies) with weights within WEIGHT_TOLERANCE, or the same weights as another file
    (the same recipe made twice); nothing else is called a merge.
    Returns ({kind: [right, all]}, [(file, truth, relation) wrong])."""
    def root(n):
        while truth[n][0] in ("copy", "precision"):
            n = truth[n][1]
        return n
    score: dict[str, list[int]] = {}
    wrong = []
    for f, (rel, _peer, merge) in relations.items():
        n = f.removesuffix(".safetensors")
        t = truth[n]
        if t[0] == "copy":          # the same bytes: the same content, so the same entry
            ok = rel == "same_weights" or [rel, _peer, merge] == list(relations.get(f"{t[1]}.safetensors", []))
        elif t[0] == "precision":
            ok = rel == "same_weights"
        elif t[0] == "merge" and root(t[1]) != root(t[3]):
            got: dict[str, float] = {}
            for m, w in merge:
                r = root(m.removesuffix(".safetensors"))
                got[r] = got.get(r, 0.0) + w
            want = {root(t[1]): t[2], root(t[3]): t[4]}
            ok = rel == "same_weights" or (rel == "merge" and set(got) == set(want) and all(
                abs(got[r] - w) <= WEIGHT_TOLERANCE for r, w in want.items()))
        else:
            ok = rel != "merge"
        score.setdefault(t[0], [0, 0])
        score[t[0]][0] += ok
        score[t[0]][1] += 1
        if not ok:
            wrong.append((f, t, (rel, _peer, merge)))
    return score, wrong


def by_copies(result: dict) -> dict:
    """A scan's relations with each peer or merge member named by its set of copies (its group of
    the same bytes or the same weights): naming either copy is right."""
    same = {n: "=".join(names) for _, names in result["groups"] for n in names}
    name = lambda n: same.get(n, n)  # noqa: E731
    return {f: [rel, name(peer) if peer else peer, sorted([name(m), w] for m, w in merge)]
            for f, (rel, peer, merge) in result["relations"].items()}


def fmt_accuracy(score: dict) -> str:
    right, total = sum(a for a, _ in score.values()), sum(b for _, b in score.values())
    return f"{right}/{total} (" + ", ".join(f"{k} {a}/{b}" for k, (a, b) in sorted(score.items())) + ")"


def fmt_bytes(n: float) -> str:
    return f"{n / 1e9:.2f} GB" if n >= 1e9 else f"{n / 1e6:.1f} MB"


def run_big(work: Path) -> None:
    folder = work / "big"
    print(f"writing {len(BIG)} full-size checkpoints (random data) to {folder} ...", flush=True)
    total = build_big(folder)
    print(f"\n### (1) {len(BIG)} full-size checkpoints, {fmt_bytes(total)}, cold page cache, empty store\n")
    old = child("always", folder, work / "cache_old")
    new = child("auto", folder, work / "cache_new")
    print("| scan | time | read from storage | read by the process | files hashed | peak RSS |")
    print("|---|---|---|---|---|---|")
    for label, r in (("hash every file (before)", old), ("fingerprint first (default)", new)):
        print(f"| {label} | {r['seconds']:.2f} s | {fmt_bytes(r['read_bytes'])} ({100 * r['read_bytes'] / total:.2f} %) "
              f"| {fmt_bytes(r['rchar'])} ({100 * r['rchar'] / total:.2f} %) | {r['hashed']} | {r['maxrss_mb']:.0f} MB |")
    print(f"\nnew / old time: {100 * new['seconds'] / old['seconds']:.2f} % (target <= 5 %); "
          f"reads: {100 * max(new['read_bytes'], new['rchar']) / total:.3f} % of the folder (target <= 1 %); "
          f"peak RSS {new['maxrss_mb']:.0f} MB (target <= 300 MB)")
    print(f"same groups: {old['groups'] == new['groups']}; errors: {old['errors']}, {new['errors']}")


def run_small(work: Path, n: int, check: int) -> None:
    from fpcore.scan import PEER_CANDIDATES
    folder = work / f"small{n}"
    t = time.perf_counter()
    truth = build_small(folder, n)
    size = sum(f.stat().st_size for f in folder.iterdir())
    print(f"\nwrote {n} small checkpoints ({fmt_bytes(size)}) in {time.perf_counter() - t:.0f} s", flush=True)
    first = child("auto", folder, work / f"cache_small{n}", cold=True)
    again = child("auto", folder, work / f"cache_small{n}", cold=False)
    ph = first["phases"]
    print(f"\n### (2) {n} small checkpoints (SD1 UNet layout, {fmt_bytes(size)}), empty store\n")
    print("| run | time | fingerprinting | hashing (confirming) | comparing | grouping | peak RSS |")
    print("|---|---|---|---|---|---|---|")
    for label, r in (("first scan", first), ("rescan, unchanged", again)):
        p = r["phases"]
        print(f"| {label} | {r['seconds']:.2f} s | " + " | ".join(
            f"{p.get(k, 0):.2f} s" for k in ("fingerprinting", "hashing", "comparing", "grouping"))
            + f" | {r['maxrss_mb']:.0f} MB |")
    print(f"\ncomparison phase: {100 * ph.get('comparing', 0) / first['seconds']:.1f} % of the first scan "
          f"(target <= 10 %); rescan {again['seconds']:.2f} s (target <= 2 s); files hashed: {first['hashed']}; "
          f"groups: {len(first['groups'])}; files compared in full per file: {first['peers_mean'] or 0:.2f} "
          f"(of the {PEER_CANDIDATES} the pursuit takes)")
    score, wrong = accuracy(first["relations"], truth)
    print(f"\nfolder relations right, against what the generator made: {fmt_accuracy(score)}")
    for w in wrong[:5]:
        print(f"  {w[0]}: made as {w[1]}, found {w[2]}")
    if check:
        cf = work / f"check{check}"
        check_truth = build_small(cf, check, seed=1)
        fast = child("auto", cf, work / "cache_check_fast", cold=False)
        slow = child("auto", cf, work / "cache_check_slow", peers=10 ** 6, cold=False)
        fr, sr = by_copies(fast), by_copies(slow)
        diff = [k for k in fr if fr[k] != sr[k]]
        print(f"\nsketch peers against the exhaustive comparison on {check} files of the same generator: "
              f"groups equal: {fast['groups'] == slow['groups']} ({len(fast['groups'])} groups); relations equal for "
              f"{check - len(diff)}/{check} files; comparing {fast['phases'].get('comparing', 0):.1f} s vs "
              f"{slow['phases'].get('comparing', 0):.1f} s; right against the generator: "
              f"{fmt_accuracy(accuracy(fast['relations'], check_truth)[0])} with peers, "
              f"{fmt_accuracy(accuracy(slow['relations'], check_truth)[0])} exhaustive")
        for k in diff[:5]:
            print(f"  {k}: sketch {fast['relations'][k]} exhaustive {slow['relations'][k]}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dir", help="where to write the folders (default: a temp dir)")
    ap.add_argument("--big-only", action="store_true")
    ap.add_argument("--small-only", action="store_true")
    ap.add_argument("--small", type=int, default=1000, help="files in the small folder (default 1000)")
    ap.add_argument("--check", type=int, default=200, help="files for the check against the exhaustive comparison")
    ap.add_argument("--keep", action="store_true", help="keep the generated folders")
    a = ap.parse_args(argv)
    work = Path(a.dir) if a.dir else Path(tempfile.mkdtemp(prefix="fp-firstscan-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        if not a.small_only:
            run_big(work)
            if not a.keep:
                shutil.rmtree(work / "big", ignore_errors=True)
        if not a.big_only:
            run_small(work, a.small, a.check)
    finally:
        if not a.keep:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
