"""Speed and memory of fingerprinting a full-size SDXL file, against the starting approach.

    python bench/speed.py [--file PATH] [--repeat 3]

Creates (once) a 6.94 GB SDXL-shaped fp16 file of random data with the real header
(testkit), then, each in a fresh process with the file dropped from the page
cache (posix_fadvise DONTNEED), runs:

* baseline: the approach this project started from: open with safetensors' numpy
  backend, read ten whole tensors (including the 49408x768 token embedding) and compute
  16 statistics on each (sort, percentiles, skew, kurtosis, norms);
* fpcore fingerprint (header + sampled runs, no hash);
* fpcore identify --no-hash against one registered reference.

Prints wall time (after imports: start-up is not compared), bytes read from storage
(/proc/self/io read_bytes), and peak RSS of the process (imports included).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

BASELINE_KEYS = [
    "conditioner.embedders.0.transformer.text_model.embeddings.token_embedding.weight",   # 49408 x 768
    "conditioner.embedders.1.model.token_embedding.weight",                                # 49408 x 1280
    "conditioner.embedders.1.model.text_projection",
    "model.diffusion_model.input_blocks.0.0.weight",
    "model.diffusion_model.label_emb.0.0.weight",
    "model.diffusion_model.time_embed.0.weight",
    "model.diffusion_model.middle_block.1.proj_in.weight",
    "model.diffusion_model.input_blocks.4.1.transformer_blocks.0.attn2.to_k.weight",
    "model.diffusion_model.out.2.weight",
    "first_stage_model.decoder.conv_in.weight",
]

CHILD = r"""
import json, os, sys, time
sys.path.insert(0, {root!r})
mode, path, refs = sys.argv[1], sys.argv[2], sys.argv[3]
def io():
    d = {{}}
    for line in open("/proc/self/io"):
        k, v = line.split(":")
        d[k] = int(v)
    return d
# imports first: interpreter and library start-up are not what is compared
if mode == "baseline":
    import numpy as np
    from scipy import stats
    from safetensors import safe_open
else:
    from fpcore.identify import fingerprint_path, identify
    from fpcore.refs.library import RefDB
io0 = io()
t0 = time.perf_counter()
if mode == "baseline":
    keys = {keys!r}
    out = {{}}
    with safe_open(path, framework="np") as f:
        for k in keys:
            a = f.get_tensor(k).astype(np.float32).ravel()
            s = np.sort(a)
            p = np.percentile(s, [1, 5, 25, 50, 75, 95, 99])
            out[k] = [float(a.mean()), float(a.std()), float(s[0]), float(s[-1]), *map(float, p),
                      float(stats.skew(a)), float(stats.kurtosis(a)), float(np.abs(a).sum()),
                      float(np.sqrt((a * a).sum())), float(np.abs(a).mean())]
    n = len(out)
elif mode == "fingerprint":
    fp, a, meta, st = fingerprint_path(path)
    n = len(fp.keys)
    extra = {{"fingerprint_bytes": fp.nbytes, "family": a.family}}
else:
    rep = identify(path, RefDB(refs, builtin_dir=refs), hashes=False)
    n = rep["verdict"]["relation"]
dt = time.perf_counter() - t0
io1 = io()
import resource
res = {{"seconds": dt, "read_bytes": io1["read_bytes"] - io0["read_bytes"], "rchar": io1["rchar"] - io0["rchar"],
       "maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "result": n}}
if mode == "fingerprint":
    res.update(extra)
print(json.dumps(res))
"""


def drop_cache(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def run(mode: str, path: str, refs: str) -> dict:
    drop_cache(path)
    code = CHILD.format(root=str(ROOT), keys=BASELINE_KEYS)
    out = subprocess.run([sys.executable, "-c", code, mode, path, refs], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--file", default=os.path.join(tempfile.gettempdir(), "fpcore-bench", "sdxl_full_fp16_random.safetensors"))
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args(argv)
    import testkit
    path = args.file
    spec = testkit.checkpoint_spec("sdxl", "full")
    if not os.path.exists(path):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        t = time.time()
        size = testkit.write_spec_file(path, spec, "F16", fill="random", seed=0)
        print(f"wrote {path}: {size / 1e9:.2f} GB in {time.time() - t:.0f} s")
    size = os.path.getsize(path)
    refs = tempfile.mkdtemp(prefix="fpbench-refs-")
    from fpcore.identify import fingerprint_path
    from fpcore.refs.library import RefDB
    fp, a, _, _ = fingerprint_path(path)
    RefDB(refs, builtin_dir=refs).add(fp, "SDXL (random)", family=a.family)
    print(f"file: {path} ({size / 1e9:.2f} GB, {len(spec)} tensors); fingerprint {fp.nbytes / 1e6:.2f} MB")
    rows = {m: [] for m in ("baseline", "fingerprint", "identify")}
    for i in range(args.repeat):
        for m in rows:
            rows[m].append(run(m, path, refs))
    print(f"\n| approach (cold cache) | time, median of {args.repeat} | read from disk | share of file | peak RSS |")
    print("|---|---|---|---|---|")
    med = {}
    for m, rs in rows.items():
        rs.sort(key=lambda r: r["seconds"])
        r = rs[len(rs) // 2]
        med[m] = r
        print(f"| {m} | {r['seconds']:.3f} s | {r['read_bytes'] / 1e6:.1f} MB | {r['read_bytes'] / size * 100:.2f}% "
              f"| {r['maxrss_mb']:.0f} MB |")
    print(f"\nspeed-up of fingerprint over baseline: {med['baseline']['seconds'] / med['fingerprint']['seconds']:.0f}x; "
          f"identify: {med['baseline']['seconds'] / med['identify']['seconds']:.0f}x")
    print("all runs:", json.dumps(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
