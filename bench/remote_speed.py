"""Fingerprint a full-size SDXL checkpoint over HTTP, against downloading it whole.

Side by side in one run, each approach in its own process (peak RSS is per process, imports
included):

* ``fpcore (requests)``: fpcore.sources.remote as shipped: a urllib3 pool with threads,
  multi-range requests;
* ``fpcore (requests, one range per request)``: the same against a location with
  ``max_ranges 1`` (how S3-like servers behave);
* ``fsspec (aiohttp)``: the same coalesced spans read through fsspec's HTTPFileSystem
  (``cat_ranges``, its own concurrency), when aiohttp is importable (``--aiohttp-path DIR``
  adds a folder holding it, e.g. ``pip install --target DIR aiohttp``);
* ``download whole``: the measured throughput of one stream through the same link, times
  the file size (a full 6.94 GB download is estimated, not run, unless ``--full``).

The file is the SDXL layout at full size (6.94 GB) with a real header and sparse data
(bench/speed.py's generator), served by Debian's nginx on 127.0.0.1 behind a Python proxy
(tests/httpkit.py) that waits ``--rtt`` seconds (default 0.05) before forwarding every
request: the latency is a delaying proxy, not netem. Bytes transferred are nginx's own
``$body_bytes_sent`` for the requests of that run.

    python bench/remote_speed.py [--rtt 0.05] [--repeat 3] [--full]
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
sys.path.insert(0, str(ROOT / "tests"))

CHILD = r"""
import json, os, resource, sys, time
sys.path.insert(0, {root!r})
mode, url = sys.argv[1], sys.argv[2]
from fpcore.identify import fingerprint_open
from fpcore.sources import remote
import numpy, scipy.stats  # imports first: start-up is not what is compared
t0 = time.perf_counter()
if mode == "fsspec":
    f = remote.FsspecFile(url)
    src = remote.RemoteSafetensors(f, url)
else:
    src = remote.open_url(url)
with src:
    fp, a, _, stats = fingerprint_open(src)
    info = src.stats
dt = time.perf_counter() - t0
print(json.dumps({{"seconds": dt, "family": a.family, "bytes_read": stats["bytes_read"], **info,
                  "maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}}))
"""


def run_child(mode: str, url: str, extra_path: str | None) -> dict:
    env = dict(os.environ)
    if extra_path:
        env["PYTHONPATH"] = extra_path + os.pathsep + env.get("PYTHONPATH", "")
    out = subprocess.run([sys.executable, "-c", CHILD.format(root=str(ROOT)), mode, url], capture_output=True,
                         text=True, env=env, timeout=600)
    if out.returncode != 0:
        return {"error": out.stderr.strip().splitlines()[-1] if out.stderr.strip() else f"exit {out.returncode}"}
    return json.loads(out.stdout.strip().splitlines()[-1])


def throughput(url: str, nbytes: int) -> float:
    """Bytes per second of one kept-alive stream reading ``nbytes`` through the proxy."""
    import requests
    with requests.Session() as s:
        t0 = time.perf_counter()
        r = s.get(url, headers={"Range": f"bytes=0-{nbytes - 1}"}, stream=True)
        got = 0
        for chunk in r.iter_content(1 << 20):
            got += len(chunk)
        dt = time.perf_counter() - t0
    return got / dt


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--file", default=os.path.join(tempfile.gettempdir(), "fpcore-bench",
                                                   "sdxl_full_fp16_sparse.safetensors"))
    ap.add_argument("--rtt", type=float, default=0.05, help="seconds the proxy adds to every request")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--aiohttp-path", default=os.environ.get("FPCORE_BENCH_AIOHTTP"),
                    help="a folder holding aiohttp (for the fsspec row)")
    ap.add_argument("--full", action="store_true", help="download the whole file once instead of estimating")
    args = ap.parse_args(argv)
    import httpkit
    import testkit
    path = Path(args.file)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        testkit.write_spec_file(path, testkit.checkpoint_spec("sdxl", "full"), "F16", fill="sparse")
    size = path.stat().st_size
    tmp = Path(tempfile.mkdtemp(prefix="fpbench-nginx-"))
    nginx = httpkit.Nginx(path.parent, tmp).start()
    proxy = httpkit.FaultProxy(("127.0.0.1", nginx.port), delay=args.rtt).start()
    try:
        modes = [("fpcore (requests, multi-range)", "requests", "/files/"),
                 ("fpcore (requests, one range per request)", "requests", "/single/"),
                 ("fsspec HTTPFileSystem (aiohttp)", "fsspec", "/files/")]
        rows: dict[str, list[dict]] = {m[0]: [] for m in modes}
        for _ in range(args.repeat):
            for label, mode, loc in modes:
                nginx.clear_log()
                r = run_child(mode, proxy.url + loc + path.name, args.aiohttp_path if mode == "fsspec" else None)
                time.sleep(0.1)
                log = nginx.log()
                r["server_requests"] = len(log)
                r["server_bytes"] = sum(x["bytes"] for x in log)
                rows[label].append(r)
        nginx.clear_log()
        probe = min(size, 1 << 30)
        bps = throughput(proxy.url + "/files/" + path.name, probe)
        if args.full:
            t0 = time.perf_counter()
            throughput(proxy.url + "/files/" + path.name, size)
            full_s = time.perf_counter() - t0
            how = "measured"
        else:
            full_s = args.rtt + size / bps
            how = f"estimated from {probe / 1e9:.1f} GB at {bps / 1e6:.0f} MB/s"
    finally:
        proxy.stop()
        nginx.stop()
    print(f"file: {path.name}, {size / 1e9:.2f} GB (SDXL layout, real header, sparse data); "
          f"latency: a proxy adding {args.rtt * 1000:.0f} ms to every request (not netem); nginx on 127.0.0.1")
    print(f"\n| approach | time to fingerprint (median of {args.repeat}) | requests | bytes transferred | "
          "share of file | peak RSS |")
    print("|---|---|---|---|---|---|")
    for label, rs in rows.items():
        ok = [r for r in rs if "error" not in r]
        if not ok:
            print(f"| {label} | not run: {rs[0].get('error', '?')[:90]} | | | | |")
            continue
        ok.sort(key=lambda r: r["seconds"])
        m = ok[len(ok) // 2]
        print(f"| {label} | {m['seconds']:.2f} s | {m['server_requests']} | {m['server_bytes'] / 1e6:.1f} MB | "
              f"{m['server_bytes'] / size * 100:.2f}% | {m['maxrss_mb']:.0f} MB |")
    print(f"| download whole, same link | {full_s:.1f} s ({how}) | 1 | {size / 1e6:.0f} MB | 100% | - |")
    best = sorted(r for r in (x["seconds"] for x in rows["fpcore (requests, multi-range)"] if "seconds" in x))
    if best:
        print(f"\nfingerprint vs download: {full_s / best[len(best) // 2]:.0f}x faster, "
              f"{size / max(1, rows['fpcore (requests, multi-range)'][0]['server_bytes']):.0f}x fewer bytes")
    print("all runs:", json.dumps(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
