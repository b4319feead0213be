"""The README's Quick start, from a fresh clone, timed: what a new user gets.

    python bench/fresh_clone.py [--rev HEAD] [--keep] [--skip-tests]

Clones this repository (the committed ``--rev``) into a temp folder, reads the two commands of
the README's Quick start from the README itself, runs them there with the machine's Python
(no venv of ours, no PYTHONPATH), checks their output (the demo's report written and every
demo verdict as built; pytest's closing line with no failure) and prints each one's wall time.
Needs the package registry (the first command installs the dependencies into a new venv).
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def quick_start(readme: str) -> list[str]:
    block = readme.split("## Quick start", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    cmds = [line.split("#", 1)[0].strip() for line in block.strip().splitlines()]
    cmds = [c for c in cmds if c]
    assert len(cmds) == 2, cmds
    return cmds


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rev", default="HEAD")
    ap.add_argument("--keep", action="store_true", help="keep the clone")
    ap.add_argument("--skip-tests", action="store_true", help="run the first command only")
    args = ap.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="fpcore-fresh-"))
    clone = tmp / "clone"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
    subprocess.run(["git", "-C", str(clone), "checkout", "-q", args.rev], check=True)
    cmds = quick_start((clone / "README.md").read_text(encoding="utf-8"))
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PATH"] = os.pathsep.join(p for p in env["PATH"].split(os.pathsep) if "/tmp/dev/" not in p)
    env["FPCORE_REFS"], env["FPCORE_CACHE"] = str(tmp / "user-refs"), str(tmp / "user-cache")
    ok = True
    for i, cmd in enumerate(cmds):
        if i == 1 and args.skip_tests:
            break
        t = time.perf_counter()
        r = subprocess.run(cmd, shell=True, cwd=clone, env=env, capture_output=True, text=True)
        dt = time.perf_counter() - t
        out = r.stdout + r.stderr
        if i == 0:
            good = (r.returncode == 0 and (clone / "fpcore-demo" / "report.html").is_file()
                    and re.search(r"^6 models, 1 unreadable, \d+ groups?, .* reclaimable$", r.stdout, re.M)
                    and "anime_v2.safetensors: SD1.x | derivative of Demo Anime" in r.stdout
                    and "identical" in r.stdout and "scratch.safetensors: SD1.x | unknown base" in r.stdout)
        else:
            last = [line for line in r.stdout.splitlines() if line.strip()][-1:] or [""]
            good = r.returncode == 0 and " passed" in last[0] and "failed" not in last[0]
            out = "\n".join(last) + "\n" + out[-3000:] if not good else last[0]
        ok &= bool(good)
        print(f"command {i + 1}: {cmd}\n  exit {r.returncode}, {dt:.1f} s wall, output {'as expected' if good else 'WRONG'}")
        if not good or i == 1:
            print("  " + out.strip().replace("\n", "\n  ")[-4000:])
    if not args.keep:
        shutil.rmtree(tmp, ignore_errors=True)
    else:
        print(f"clone kept: {clone}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
