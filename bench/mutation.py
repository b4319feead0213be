"""Test strength by mutation: the share of mutants of the verdict-deciding modules the tests kill.

Runs mutmut (https://github.com/boxed/mutmut, 3.x) module by module, each module with only the
tests that cover it, in a copy of this checkout (mutmut rewrites the code it mutates; the
checkout is never touched), at the lowest CPU priority (nice 19) on two workers. Prints one
row per module: mutants run, killed (a test failed or timed out), survived, share killed;
``--survivors`` also prints each surviving mutant's diff.

    python bench/mutation.py                        # every module, at most 120 mutants each
    python bench/mutation.py --modules tags arch    # some of them
    python bench/mutation.py --sample 0             # every mutant (a long run on two cores)
    python bench/mutation.py --survivors            # and the surviving mutants' diffs

``--sample N`` runs a deterministic sample of N mutants per module (seed ``--seed``) when a module
has more; the row says how many it had. Needs ``pip install mutmut==3.8.1`` in the environment
that runs the tests (with the project's test extra).
"""
from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
#: module -> (files mutmut mutates, the tests that cover them). Tests are chosen so that a run
#: fits on two cores: mutmut runs, for each mutant, only those of these tests that call the
#: mutated function.
MODULES = {
    "match": (["fpcore/match/*"], ["tests/test_match.py"]),
    "verdict": (["fpcore/identify/verdict.py"], ["tests/test_verdict_unit.py"]),
    "arch": (["fpcore/arch.py"], ["tests/test_arch_rules.py"]),
    "keymaps": (["fpcore/keymaps.py"], ["tests/test_keymaps.py"]),
    "tags": (["fpcore/tags.py"], ["tests/test_tags.py"]),
}
MUTMUT = "mutmut"
DONE = {0: "survived", 1: "killed", 3: "killed", 5: "no tests", 33: "no tests", 34: "skipped", 35: "suspicious",
        36: "timeout", 37: "timeout", -24: "timeout", -11: "segfault", -9: "killed (memory)", 152: "timeout",
        255: "timeout"}


def _copy_checkout(dest: Path) -> None:
    files = subprocess.run(["git", "ls-files", "-z", "fpcore", "tests", "testkit", "refs", "web", "__init__.py",
                            "nodes.py", "pyproject.toml"], cwd=ROOT, capture_output=True, check=True).stdout
    for rel in filter(None, files.decode().split("\0")):
        src = ROOT / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    for rel in ("tests", "testkit"):           # tests added in this checkout and not yet committed
        for src in (ROOT / rel).rglob("*.py"):
            d = dest / src.relative_to(ROOT)
            if not d.exists():
                d.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, d)


def _config(dest: Path, mutate: list[str], tests: list[str]) -> None:
    tests = [t for t in tests if (dest / t).exists()]
    lines = ["[mutmut]", "source_paths=fpcore", "only_mutate=" + "\n    ".join(mutate),
             "pytest_add_cli_args_test_selection=" + "\n    ".join(tests),
             "pytest_add_cli_args=-p\n    no:cacheprovider\n    -x\n    -q",
             "also_copy=testkit\n    refs\n    web\n    __init__.py\n    nodes.py", ""]
    (dest / "setup.cfg").write_text("\n".join(lines), encoding="utf-8")


def _mutmut(dest: Path, *args: str, timeout: float | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
    return subprocess.run(["nice", "-n", "19", MUTMUT, *args], cwd=dest, env=env, capture_output=True, text=True,
                          timeout=timeout)


def _results(dest: Path) -> dict[str, str]:
    """mutant name -> status, from mutmut's meta files."""
    out = {}
    for meta in (dest / "mutants").rglob("*.meta"):
        data = json.loads(meta.read_text())
        for name, code in data.get("exit_code_by_key", {}).items():
            out[name] = "not run" if code is None else DONE.get(code, f"exit {code}")
    return out


def run_module(name: str, sample: int, seed: int, workers: int, survivors: bool) -> dict:
    mutate, tests = MODULES[name]
    with tempfile.TemporaryDirectory(prefix=f"mutation-{name}-") as tmp:
        dest = Path(tmp)
        _copy_checkout(dest)
        _config(dest, mutate, tests)
        t0 = time.perf_counter()
        # generate the mutants and the per-test stats without running any mutant
        _mutmut(dest, "run", "--max-children", str(workers), "no.such.mutant")
        every = sorted(_results(dest))
        chosen = every
        if sample and len(every) > sample:
            chosen = sorted(random.Random(seed).sample(every, sample))
        if chosen:
            _mutmut(dest, "run", "--max-children", str(workers), *chosen)
        res = _results(dest)
        got = {m: res.get(m, "not run") for m in chosen}
        killed = sum(1 for s in got.values() if s.startswith("killed") or s == "timeout")
        survived = [m for m, s in got.items() if s == "survived"]
        row = {"module": name, "mutants": len(every), "run": len(chosen), "killed": killed,
               "survived": len(survived), "other": len(chosen) - killed - len(survived),
               "share": killed / len(chosen) if chosen else None, "seconds": round(time.perf_counter() - t0, 1),
               "survivors": survived}
        if survivors:
            row["diffs"] = {m: _mutmut(dest, "show", m).stdout for m in survived}
        return row


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--modules", nargs="*", default=list(MODULES), choices=list(MODULES))
    ap.add_argument("--sample", type=int, default=120, help="mutants per module at most (0: all)")
    ap.add_argument("--seed", type=int, default=28)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--survivors", action="store_true", help="print each surviving mutant's diff")
    ap.add_argument("--json", help="also write the rows to this file")
    args = ap.parse_args(argv)
    if shutil.which(MUTMUT) is None:
        print("mutmut is not installed: pip install mutmut==3.8.1", file=sys.stderr)
        return 2
    rows = []
    print(f"{'module':10} {'mutants':>8} {'run':>5} {'killed':>7} {'survived':>9} {'other':>6} {'killed %':>9} {'s':>7}")
    for name in args.modules:
        row = run_module(name, args.sample, args.seed, args.workers, args.survivors)
        rows.append(row)
        share = f"{row['share'] * 100:.1f}" if row["share"] is not None else "-"
        print(f"{name:10} {row['mutants']:>8} {row['run']:>5} {row['killed']:>7} {row['survived']:>9} "
              f"{row['other']:>6} {share:>9} {row['seconds']:>7}", flush=True)
        for m, diff in (row.get("diffs") or {}).items():
            print(f"  survived: {m}\n" + "\n".join("    " + ln for ln in diff.splitlines()[1:]))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
