"""Folder scan speed: first scan (cold page cache, empty store) with 1 and 2 hashing
workers and with the adaptive choice, and the rescan of the unchanged folder.

    python bench/scan_speed.py DIR

Prints files, bytes, wall time and throughput for each, so the default worker count
(fpcore.scan._disk_workers: 1 on a spinning disk, else 2) can be checked on this disk.
"""
from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from fpcore.refs.library import RefDB  # noqa: E402
from fpcore.scan import _disk_workers, find_models, scan_folder  # noqa: E402
from speed import drop_cache  # noqa: E402


def main(argv=None) -> int:
    import logging
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    logging.getLogger("fpcore.scan").setLevel(logging.INFO)   # shows the adaptive choice
    root = (argv or sys.argv[1:])[0]
    files, _ = find_models(root)
    size = sum(os.path.getsize(f) for f in files if os.path.isfile(f))
    print(f"{root}: {len(files)} files, {size / 1e9:.2f} GB; default workers by /sys: {_disk_workers(root)}")
    print("\n| run | workers | time | throughput |\n|---|---|---|---|")
    tmp = Path(tempfile.mkdtemp(prefix="fpscan-"))
    db = RefDB(tmp / "refs", builtin_dir=tmp / "none")
    for workers in (1, 2, None):
        for f in files:
            if os.path.isfile(f):
                drop_cache(f)
        cache = tmp / f"cache{workers}"
        t = time.perf_counter()
        res = scan_folder(root, db=db, cache_dir=cache, workers=workers)
        dt = time.perf_counter() - t
        label = workers or f"adaptive (chose {res['workers']})"
        print(f"| first scan (cold) | {label} | {dt:.1f} s | {size / dt / 1e6:.0f} MB/s |")
    t = time.perf_counter()
    scan_folder(root, db=db, cache_dir=tmp / "cacheNone")
    dt = time.perf_counter() - t
    print(f"| rescan (unchanged) | default | {dt:.2f} s | – |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
