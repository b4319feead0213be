"""Test strength by mutation: the share of mutants of the verdict-deciding modules the tests kill.

Runs mutmut (3.x, from PyPI) module by module, each module with only the
tests that cover it, in a copy of this checkout (mutmut rewrites the code it mutates; the
checkout is never touched), at the lowest CPU priority (nice 19) on two workers. Prints one
row per module: mutants run, killed (a test failed or timed out), survived, of those the
equivalent ones (``EQUIVALENT``: no test can tell them from the original, each with its reason),
other outcomes (no test runs the mutated line, ...), and the share killed, of all and of the
non-equivalent; ``--survivors`` also prints each other surviving mutant's diff.

    python bench/mutation.py                        # every module (fpcore/match/: a sample of 200 mutants)
    python bench/mutation.py --modules tags arch    # some of them
    python bench/mutation.py --sample 0             # every mutant of every module (match/: over an hour)
    python bench/mutation.py --survivors            # and the surviving mutants' diffs

``--sample N`` runs a deterministic sample of N mutants per module (seed ``--seed``) when a module
has more (default: ``SAMPLE``); the row says how many it had. Needs ``pip install mutmut==3.8.1`` in the environment
that runs the tests (with the project's test extra).
"""
from __future__ import annotations

import argparse
import json
import os
import random
import re
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
    "match": (["fpcore/match/*"], ["tests/test_match.py", "tests/test_match_units.py"]),
    "verdict": (["fpcore/identify/verdict.py"], ["tests/test_verdict_unit.py", "tests/test_verdict_report.py"]),
    "arch": (["fpcore/arch.py"], ["tests/test_arch_rules.py"]),
    "keymaps": (["fpcore/sources/keymaps.py"], ["tests/test_keymaps.py"]),
    "tags": (["fpcore/scan/tags.py"], ["tests/test_tags.py"]),
}
#: mutants run per module by default (0: all): fpcore/match/ has about 2,200, about 75 minutes on
#: two busy cores, so a sample (drawn with --seed, 30 by default) stands for it
SAMPLE = {"match": 200}
#: surviving mutants that no test can kill, by name pattern (* any text, [..] a set, (a|b) either), with
#: the reason. Names are
#: mutmut's (function and number) for this source; a change to a function renumbers its mutants,
#: and a survivor that no longer matches here is reported as a survivor.
IMPORT_TIME = ("the function only runs at import, building a table (arch.RULES) before mutmut switches a mutant "
               "on, so no test can reach it; a wrong rule is caught by the detection tests (tests/test_arch*.py)")
EQUIVALENT = {
    "fpcore.arch.x_R__mutmut_*": IMPORT_TIME,
    "fpcore.arch.x__flux__mutmut_*": IMPORT_TIME,
    "fpcore.arch.x__rx__mutmut_[12]": "without the cache every call compiles again, and re.compile's own cache "
                                      "returns the same pattern object",
    "fpcore.arch.x__check__mutmut_3[4-9]": "the 'ndim' wording of the shapes_match branch: no rule checks ndim "
                                           "through shapes_match (they check dims 1 and -1)",
    "fpcore.arch.x__check__mutmut_40": "as above",
    "fpcore.arch.x_declared_components__mutmut_[57]": "every rule id has an entry in PARTS: the default is never used",
    "fpcore.arch.x_detect__mutmut_8": "no rule of RULES checks metadata (only TARGETS do, and they get it)",
    "fpcore.arch.x_detect__mutmut_7[4-9]": "dead branch: every rule of kind checkpoint requires a denoiser key, so "
                                           "a checkpoint match always has a denoiser component",
    "fpcore.arch.x_detect__mutmut_8[0-5]": "as above",
    "fpcore.arch.x_detect__mutmut_126": "a weight that is not there reads as '' or 'XXXX': neither starts with F8_",
    "fpcore.identify.verdict.x__identify_fingerprint__mutmut_(33|4[156])": "RefDB.layout_pool gives the references "
        "the plain filter gives (tests/test_verdict_unit.py: a database without it gives the same verdicts)",
    "fpcore.identify.verdict.x__identify_fingerprint__mutmut_(5[4-7]|6[2-7])": "RefDB.candidates keeps the whole "
        "pool below the index's size threshold (every unit-test library); the index: tests/test_refs_scale.py",
    "fpcore.identify.verdict.x__identify_fingerprint__mutmut_(9[6-8]|10[23])": "an unknown verdict with nothing "
        "compared already has no confidence (match.analyse sets None)",
    "fpcore.identify.verdict.x__identify_fingerprint__mutmut_(22[7-9]|231|24[23])": "the sentence of a floored "
        "verdict uses neither relation, lineage nor result, and a floored verdict had references (n_family > 0)",
    "fpcore.identify.verdict.x__whole_file__mutmut_(2[469]|3[245])": "RELATION_RANK has every relation: the "
                                                                       "default is never used",
    "fpcore.identify.verdict.x__whole_file__mutmut_83": "RefDB.lineage(None) is []",
    "fpcore.identify.verdict.x__common_lineage__mutmut_6": "every name of that tuple is the same one",
    "fpcore.identify.verdict.x__summary__mutmut_(13|21)": "lstrip('XXIXX') strips the same as lstrip('I'): no "
                                                           "storage label starts with X",
    "fpcore.identify.verdict.x__te_sentence__mutmut_(6|1[45])": "dead branch: with the file's SHA-256 every "
        "component is identical, so a text encoder is never weaker than an identical UNet",
    "fpcore.identify.verdict.x__vae_sentence__mutmut_(33|4[01])": "dead branch: the function returns early when "
                                                                   "there is no base",
    "fpcore.identify.verdict.x__same_layout__mutmut_20": "components come from the file's own keys: the file "
                                                         "always has keys of the component",
    "fpcore.identify.verdict.x_file_report__mutmut_29": "callers pass the origin 'not computed' when there is "
                                                        "no hash, which is what the report then says",
    "fpcore.match.align.xǁAlignedǁ_moments_by_block__mutmut_(5|31)": "every block group of a fingerprint's sorted "
        "keys is contiguous: the moments come out the same, in one pass or per group, in any order of the "
        "disjoint ranges",
    "fpcore.match.align.xǁAlignedǁ(cols__mutmut_22|__init____mutmut_5)": "the per-tensor counts recomputed from "
                                                                          "tensor_of equal the ones passed",
    "fpcore.match.align.x__mismatch_same_layout__mutmut_35": "with exactly MISMATCH_PREFIX values the prefix is "
                                                             "the whole array: the early count is the full count",
    "fpcore.match.fits.x_whole_merge__mutmut_108": "related candidates come sorted by distance, the square root "
        "of the same single residual: the best single reference is always column 0, argmin(None)'s answer",
    "fpcore.match.fits.x_(affine_floor__mutmut_28|delta_merge__mutmut_37)": "numpy 2's default rcond for lstsq "
                                                                            "is None, the value passed",
    "fpcore.match.analyse.x__statistics__mutmut_1": "analyse always passes exact explicitly",
    "fpcore.match.analyse.xǁ_Statsǁsame_evidence__mutmut_10": "0 is view()'s default min_ndim",
    "fpcore.sources.keymaps.x_map_key__mutmut_10": "'>=' picks the last of equal-length prefixes; no two pairs share a "
                                           "prefix (tests/test_keymaps.py checks it), so there is never a tie",
    "fpcore.scan.tags.x__read__mutmut_4": "encoding=None is the locale's encoding: UTF-8 here (Linux, UTF-8 locale, "
                                     "Python's UTF-8 mode); it differs only where the locale is not UTF-8",
    "fpcore.scan.tags.x__read__mutmut_6": "codec names are case-insensitive ('UTF-8' is 'utf-8')",
    "fpcore.scan.tags.x_write__mutmut_44": "codec names are case-insensitive ('UTF-8' is 'utf-8')",
    "fpcore.scan.tags.x_write__mutmut_36": "ensure_ascii=None is falsy, as False",
    "fpcore.scan.tags.x_tags_for__mutmut_1[67]": "facts.FAMILIES['unknown'] has no A1111/Forge value: an unknown family "
                                            "and a missing one both give Unknown",
}
MUTMUT = "mutmut"
DONE = {0: "survived", 1: "killed", 3: "killed", 5: "no tests", 33: "no tests", 34: "skipped", 35: "suspicious",
        36: "timeout", 37: "timeout", -24: "timeout", -11: "segfault", -9: "killed (memory)", 152: "timeout",
        255: "timeout"}


def _matches(name: str, pattern: str) -> bool:
    """fnmatch's * and [..], and (a|b) alternatives: a pattern is a regex once '*' becomes '.*'."""
    return re.fullmatch(pattern.replace(".", r"\.").replace("*", ".*"), name) is not None


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
        equivalent = {m: why for m in survived for pat, why in EQUIVALENT.items() if _matches(m, pat)}
        other = {m: s for m, s in got.items() if s != "survived" and not (s.startswith("killed") or s == "timeout")}
        rest = len(chosen) - len(equivalent)
        row = {"module": name, "mutants": len(every), "run": len(chosen), "killed": killed,
               "survived": len(survived), "equivalent": len(equivalent), "other": len(other),
               "share": killed / len(chosen) if chosen else None,
               "share_of_rest": killed / rest if rest else None, "seconds": round(time.perf_counter() - t0, 1),
               "survivors": [m for m in survived if m not in equivalent], "equivalents": equivalent,
               "others": other}
        if survivors:
            row["diffs"] = {m: _mutmut(dest, "show", m).stdout for m in survived if m not in equivalent}
        return row


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--modules", nargs="*", default=list(MODULES), choices=list(MODULES))
    ap.add_argument("--sample", type=int, default=None, help="mutants per module at most (0: all; default: SAMPLE)")
    ap.add_argument("--seed", type=int, default=30)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--survivors", action="store_true", help="print each surviving mutant's diff")
    ap.add_argument("--json", help="also write the rows to this file")
    args = ap.parse_args(argv)
    if shutil.which(MUTMUT) is None:
        print("mutmut is not installed: pip install mutmut==3.8.1", file=sys.stderr)
        return 2
    rows = []
    print(f"{'module':10} {'mutants':>8} {'run':>5} {'killed':>7} {'survived':>9} {'equiv.':>7} {'other':>6} "
          f"{'killed %':>9} {'of non-equiv. %':>16} {'s':>7}")
    for name in args.modules:
        sample = args.sample if args.sample is not None else SAMPLE.get(name, 0)
        row = run_module(name, sample, args.seed, args.workers, args.survivors)
        rows.append(row)
        pct = lambda x: f"{x * 100:.1f}" if x is not None else "-"  # noqa: E731
        print(f"{name:10} {row['mutants']:>8} {row['run']:>5} {row['killed']:>7} {row['survived']:>9} "
              f"{row['equivalent']:>7} {row['other']:>6} {pct(row['share']):>9} {pct(row['share_of_rest']):>16} "
              f"{row['seconds']:>7}", flush=True)
        for m, status in row["others"].items():
            print(f"  {status}: {m}")
        for m, diff in (row.get("diffs") or {}).items():
            print(f"  survived: {m}\n" + "\n".join("    " + ln for ln in diff.splitlines()[1:]))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
