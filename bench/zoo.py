"""A generated lineage zoo, and a scorer that prints accuracy per case class.

    python bench/zoo.py [--family sdxl] [--size tiny] [--out DIR] [--keep]

The zoo has real key names and layouts at reduced width (testkit). Bases are
random initialisations ("trained from scratch"); children carry dense fine-tune
deltas with a component shared by every fine-tune (weight decay towards zero plus a
common data direction, delta cosine ~0.06 between siblings as measured on a real
model in RESEARCH.md), so siblings are not trivially orthogonal.

Reference tree registered for scoring:

    Base ── Pony-like (heavy, 35%) ── PonyFT (light, 2%)
         └─ Illustrious-like (30%) ── NoobAI-like (15%)

Case classes: precision copies and layout variants (same_weights), fine-tunes at
several strengths, baked LoRAs, merges (plain, 3-way, block-weighted), add-difference,
siblings of registered models, UNet-only files, and independent models of the same
architecture (must be unknown).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import tempfile
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import testkit  # noqa: E402
from fpcore import layout  # noqa: E402
from testkit import bake_lora, finetune, is_weight, merge, unet_only  # noqa: E402
from fpcore.identify import identify  # noqa: E402
from fpcore.refs.library import RefDB  # noqa: E402
from fpcore.identify import fingerprint_path, merge_recipe  # noqa: E402

@dataclass
class Case:
    name: str
    klass: str
    relation: str
    base: str | None
    merge: dict[str, float] = field(default_factory=dict)
    blocks: dict[str, dict[str, float]] = field(default_factory=dict)
    dtype: str = "F16"
    order: str = "sorted"
    metadata: dict | None = None
    refset: str = "full"      # which registered references the case is scored against
    members: set | None = None  # merge scored on its members only (weights not checked)
    differs: list | None = None  # components expected in verdict.differs (None: not checked)
    vae: str | None = "Base"   # reference the VAE must be named after (the oldest carrying it)
    needs: str | None = None   # a fix this case waits for (reported, not counted as wrong)


def build(out: Path, family: str = "sdxl", size: str = "tiny", log=print):
    """Write the zoo under ``out``; returns (reference list, cases)."""
    out.mkdir(parents=True, exist_ok=True)
    spec = testkit.checkpoint_spec(family, size)
    t0 = time.time()
    sd = {}
    sd["Base"] = testkit.random_state_dict(spec, 1)
    sd["Pony"] = finetune(sd["Base"], 0.35, 11, comps=("unet", "clip_l", "clip_g", "clip_h"))
    sd["Illustrious"] = finetune(sd["Base"], 0.30, 12, comps=("unet", "clip_l", "clip_g", "clip_h"))
    sd["NoobAI"] = finetune(sd["Illustrious"], 0.15, 13)
    sd["PonyFT"] = finetune(sd["Pony"], 0.02, 14)
    refs = [("Base", None), ("Pony", "Base"), ("Illustrious", "Base"), ("NoobAI", "Illustrious"), ("PonyFT", "Pony")]
    for name, _ in refs:
        testkit.write_safetensors(out / f"ref_{name}.safetensors", sd[name], "F16")
    cases: list[Case] = []

    def add(case: Case, weights: dict):  # write at once: a zoo does not fit in memory
        testkit.write_safetensors(out / f"{case.name}.safetensors", weights, case.dtype, metadata=case.metadata,
                                order=case.order)
        cases.append(case)

    # same weights: precision and layout changes
    for r in ("Base", "Pony", "NoobAI"):
        for dt in ("BF16", "F8_E4M3", "F32"):
            add(Case(f"{r}_{dt.lower()}", "same weights (precision)", "same_weights", r, dtype=dt), sd[r])
    add(Case("Pony_shuffled_meta", "same weights (layout)", "same_weights", "Pony", order="shuffle:3",
             metadata={"modelspec.title": "totally new model"}), sd["Pony"])
    add(Case("Illustrious_unet_only", "same weights (layout)", "same_weights", "Illustrious"), unet_only(sd["Illustrious"]))
    add(Case("Illustrious_diffusion_model_prefix", "same weights (layout)", "same_weights", "Illustrious"),
        {("diffusion_model." + k[len("model.diffusion_model."):] if k.startswith("model.diffusion_model.") else k): v
         for k, v in sd["Illustrious"].items()})
    # fine-tunes at several strengths
    for r, seed0 in (("Base", 100), ("Pony", 200), ("Illustrious", 300), ("NoobAI", 400), ("PonyFT", 500)):
        for i, s in enumerate((0.002, 0.01, 0.03, 0.10, 0.30) if r != "Base" else (0.0005, 0.002, 0.01, 0.03, 0.10, 0.30)):
            add(Case(f"{r}_ft{s}", "fine-tune", "derivative", r), finetune(sd[r], s, seed0 + i))
    add(Case("Pony_ft0.01_fp8", "fine-tune (fp8 copy)", "derivative", "Pony", dtype="F8_E4M3"), finetune(sd["Pony"], 0.01, 601))
    add(Case("Pony_ft0.002_bf16", "fine-tune (bf16 copy)", "derivative", "Pony", dtype="BF16"), finetune(sd["Pony"], 0.002, 602))
    add(Case("NoobAI_ft0.03_unet_only", "fine-tune (UNet only)", "derivative", "NoobAI"),
        unet_only(finetune(sd["NoobAI"], 0.03, 603)))
    # baked LoRAs
    for r, rank, s, seed in (("Pony", 8, 0.05, 700), ("Illustrious", 32, 0.10, 701), ("NoobAI", 16, 0.02, 702)):
        add(Case(f"{r}_lora_r{rank}", "baked LoRA", "derivative", r), bake_lora(sd[r], rank, s, seed))
    # siblings of registered models (derived from the parent, not the child)
    add(Case("Base_sibling_heavy", "sibling (unregistered fine-tune of a base)", "derivative", "Base"),
        finetune(sd["Base"], 0.35, 800, comps=("unet", "clip_l", "clip_g", "clip_h")))
    add(Case("Illustrious_sibling", "sibling (unregistered fine-tune of a base)", "derivative", "Illustrious"),
        finetune(sd["Illustrious"], 0.15, 801))
    # merges
    for a, b, w in (("Pony", "Illustrious", 0.5), ("Pony", "Illustrious", 0.3), ("Base", "Pony", 0.6),
                    ("NoobAI", "PonyFT", 0.7)):
        add(Case(f"merge_{a}{w}_{b}", "merge (2 refs)", "merge", "Base", {a: w, b: round(1 - w, 3)}),
            merge([(sd[a], w), (sd[b], 1 - w)]))
    add(Case("merge3_Pony_Ill_Noob", "merge (3 refs)", "merge", "Base", {"Pony": 0.2, "Illustrious": 0.3, "NoobAI": 0.5}),
        merge([(sd["Pony"], 0.2), (sd["Illustrious"], 0.3), (sd["NoobAI"], 0.5)]))
    add(Case("merge_Pony_Ill_fp8", "merge (2 refs, fp8)", "merge", "Base", {"Pony": 0.6, "Illustrious": 0.4},
             dtype="F8_E4M3"), merge([(sd["Pony"], 0.6), (sd["Illustrious"], 0.4)]))
    bw = {"input": [0.2, 0.8], "middle": [0.5, 0.5], "output": [0.9, 0.1]}
    add(Case("block_merge_Pony_Ill", "merge (block-weighted)", "merge", "Base", {},
             {g: {"Pony": w[0], "Illustrious": w[1]} for g, w in bw.items()}),
        merge([(sd["Pony"], 0.5), (sd["Illustrious"], 0.5)], bw))
    add(Case("merge_then_ft", "merge (then fine-tuned 1%)", "merge", "Base", {"Pony": 0.4, "Illustrious": 0.6}),
        finetune(merge([(sd["Pony"], 0.4), (sd["Illustrious"], 0.6)]), 0.01, 900))
    # merge methods that do not mix whole weights: DARE (random drop + rescale) is unbiased,
    # TIES (trim, elect sign, disjoint mean) biases weights low: only its members are scored
    add(Case("dare_Pony0.5_Ill0.5", "merge (DARE, drop 0.9)", "merge", "Base", {"Pony": 0.5, "Illustrious": 0.5}),
        testkit.dare_merge(sd["Base"], [(sd["Pony"], 0.5), (sd["Illustrious"], 0.5)], 0.9, 31))
    add(Case("ties_Pony_Ill", "merge (TIES, members only)", "merge", "Base", members={"Pony", "Illustrious"}),
        testkit.ties_merge(sd["Base"], [sd["Pony"], sd["Illustrious"]]))
    # add-difference: A + (B - parent(B)) is a derivative of A
    add(Case("adddiff_Pony+Noob-Ill", "add-difference", "derivative", "Pony"),
        {k: (sd["Pony"][k] + sd["NoobAI"][k] - sd["Illustrious"][k]) if is_weight(sd["Pony"][k]) else sd["Pony"][k]
         for k in sd["Pony"]})
    add(Case("adddiff_Ill+0.5Pony", "add-difference", "derivative", "Illustrious"),
        {k: (sd["Illustrious"][k] + 0.5 * (sd["Pony"][k] - sd["Base"][k])) if is_weight(sd["Pony"][k]) else sd["Pony"][k]
         for k in sd["Pony"]})
    # only some references registered: never claim a base that is not there
    add(Case("Illustrious_vs_orphan_Pony", "parent not registered", "unknown", None, refset="pony_orphan",
             vae="Pony"),
        sd["Illustrious"])
    add(Case("Pony_ft0.03_vs_orphan_Pony", "parent not registered", "derivative", "Pony", refset="pony_orphan",
             vae="Pony"),
        finetune(sd["Pony"], 0.03, 950))
    add(Case("Illustrious_vs_root_Base", "parent not registered", "derivative", "Base", refset="base_only"),
        sd["Illustrious"])
    # components other than the UNet (issue 12): a text-encoder-only fine-tune is a derivative;
    # a baked-in VAE swap keeps the relation but is named in verdict.differs
    add(Case("Pony_te_only_ft0.05", "fine-tune (text encoders only)", "derivative", "Pony",
             differs=["clip_l", "clip_g"]), finetune(sd["Pony"], 0.05, 610, comps=("clip_l", "clip_g", "clip_h")))
    foreign_vae = testkit.random_state_dict(spec, 79)
    add(Case("Pony_vae_swap", "same weights (VAE swapped)", "same_weights", "Pony", differs=["vae"], vae=None),
        {k: (foreign_vae[k] if layout.canonical(k)[0] == "vae" else v) for k, v in sd["Pony"].items()})
    # ComfyUI "fp8 scaled" quantised from the fp32 master, while the reference holds fp16(w)
    cases.append(Case("Pony_fp8_scaled_from_fp32", "same weights (fp8 scaled, fp32 master)", "same_weights", "Pony",
                      dtype="F8_E4M3", needs="issue 12 defect 4 (scaled fp8 double rounding)"))
    write_fp8_scaled(out / "Pony_fp8_scaled_from_fp32.safetensors", sd["Pony"])
    # independent models of the same architecture
    for seed in (77, 78):
        ind = testkit.random_state_dict(spec, seed)
        add(Case(f"independent_{seed}", "independent (same architecture)", "unknown", None, vae=None), ind)
        add(Case(f"independent_{seed}_ft", "independent (same architecture)", "unknown", None, vae=None),
            finetune(ind, 0.05, seed + 1))
    log(f"built {len(cases)} cases + {len(refs)} references in {time.time() - t0:.0f} s under {out}")
    from dataclasses import asdict
    (out / "cases.json").write_text(json.dumps({"refs": refs, "cases": [
        {**asdict(c), "members": sorted(c.members) if c.members else None} for c in cases]}, indent=1))
    return refs, cases


def load(out: Path):
    """The reference list and cases of a zoo built before (``--rescore``)."""
    data = json.loads((out / "cases.json").read_text())
    cases = [Case(**{**c, "members": set(c["members"]) if c.get("members") else None}) for c in data["cases"]]
    return [tuple(r) for r in data["refs"]], cases


#: reference subsets: name -> references registered (a parent may be named but absent)
REFSETS = {"full": None, "pony_orphan": {"Pony"}, "base_only": {"Base"}}


def register(out: Path, refs, refdir: Path) -> dict[str, RefDB]:
    dbs = {}
    for setname, members in REFSETS.items():
        d = refdir / setname
        db = RefDB(d, builtin_dir=d / "none")
        for name, parent in refs:
            if members is None or name in members:
                fp, a, _, _ = fingerprint_path(out / f"ref_{name}.safetensors")
                db.add(fp, name, parent=parent, family=a.family)
        dbs[setname] = db
    return dbs


def score(out: Path, cases: list[Case], dbs: dict[str, RefDB]) -> list[dict]:
    rows = []
    for c in cases:
        rep = identify(out / f"{c.name}.safetensors", dbs[c.refset], hashes=False)
        v = rep["verdict"]
        ok = v["relation"] == c.relation and (c.base is None and c.relation == "unknown" or
                                             c.relation == "merge" and not c.base or v["base"] == c.base)
        if c.relation == "unknown":
            ok = v["relation"] == "unknown" and v["base"] is None
        err = None
        if c.merge and v["relation"] == "merge":
            got = {m["ref"]: m["weight"] for m in rep["merge"]}
            err = max(abs(got.get(k, 0) - w) for k, w in {**{k: 0 for k in got}, **c.merge}.items())
            ok = ok and err <= 0.05
        if c.members is not None:
            got_members = {m["ref"] for m in rep["merge"]}
            ok = v["relation"] == "merge" and c.members <= got_members
        if c.blocks and v["relation"] == "merge":
            got = {g: {m["ref"]: m["weight"] for m in ws} for g, ws in (rep.get("merge_blocks") or {}).items()}
            err = 1.0 if not got else max(abs(got.get(g, {}).get(k, 0) - w) for g, ws in c.blocks.items()
                                          for k, w in {**{k: 0 for k in got.get(g, {})}, **ws}.items())
            ok = ok and err <= 0.05
        notes = []
        if c.relation == "merge" and v["relation"] == "merge" and merge_recipe(rep["merge"]) not in v["summary"]:
            ok, notes = False, notes + ["the summary does not name the recipe"]
        if c.differs is not None and sorted(v.get("differs") or []) != sorted(c.differs):
            ok, notes = False, notes + [f"differs {v.get('differs')}, expected {c.differs}"]
        vae = (rep.get("components") or {}).get("vae")
        if c.vae and vae and vae.get("ref") != c.vae:
            ok, notes = False, notes + [f"VAE named after {vae.get('ref')}, expected {c.vae} (the oldest carrier)"]
        rows.append({"case": c.name, "class": c.klass, "expect": f"{c.relation}:{c.base}",
                     "got": f"{v['relation']}:{v['base']}", "ok": ok, "merge_err": err,
                     "confidence": v["confidence"], "summary": v["summary"], "notes": notes, "needs": c.needs,
                     "seconds": rep["stats"]["fingerprint_seconds"]})
    return rows


def write_fp8_scaled(path: Path, sd: dict) -> None:
    """ComfyUI's "fp8 scaled" layout: e4m3 of w / s for each UNet weight (from ``sd`` as it is,
    here the fp32 master), a scalar ``scale_weight`` beside it, and the ``scaled_fp8`` marker."""
    out, dt = {}, {}
    for k, v in sd.items():
        if is_weight(v) and v.ndim >= 2 and k.startswith("model.diffusion_model."):
            s = np.float32(max(float(np.abs(v).max()), 1e-12) / 448.0)
            out[k], dt[k] = v / s, "F8_E4M3"
            out[k[:-len("weight")] + "scale_weight"], dt[k[:-len("weight")] + "scale_weight"] = np.array(s, np.float32), "F32"
        else:
            out[k], dt[k] = v, "F16"
    out["model.diffusion_model.scaled_fp8"], dt["model.diffusion_model.scaled_fp8"] = np.zeros(0, np.float32), "F8_E4M3"
    testkit.write_safetensors(path, out, dt)


def check_merge_tags(out: Path, refdir: Path, case: str = "merge_Pony0.5_Illustrious",
                     want: str = "merge: Pony 50% + Illustrious 50%") -> dict:
    """The 50/50 merge through ``fpcore scan --write-tags``: the sidecar must name the recipe
    in ``base_model`` and list the members (each with its lineage) in ``merge``."""
    import contextlib
    import io
    from fpcore.cli import main as cli
    d = out.parent / "tagged"
    shutil.rmtree(d, ignore_errors=True)
    d.mkdir()
    shutil.copy(out / f"{case}.safetensors", d / f"{case}.safetensors")
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        code = cli(["scan", str(d), "--write-tags", "--no-cache", "--refs", str(refdir)])
    side = json.loads((d / f"{case}.json").read_text())
    members = [(m.get("ref"), m.get("lineage")) for m in side.get("merge") or []]
    ok = (code == 0 and side.get("base_model") == want and side.get("lineage") == ["Base"]
          and members == [("Pony", ["Base", "Pony"]), ("Illustrious", ["Base", "Illustrious"])]
          and want[len("merge: "):] in buf.getvalue())
    return {"case": f"{case} --write-tags", "ok": ok, "base_model": side.get("base_model"),
            "merge": members, "lineage": side.get("lineage")}


def print_table(rows: list[dict]) -> None:
    classes: dict[str, list[dict]] = {}
    for r in rows:
        classes.setdefault(r["class"], []).append(r)
    print(f"\n| case class | cases | correct | max merge-weight error |")
    print("|---|---|---|---|")
    for k, rs in classes.items():
        errs = [r["merge_err"] for r in rs if r["merge_err"] is not None]
        print(f"| {k} | {len(rs)} | {sum(r['ok'] for r in rs)} | {max(errs):.4f} |" if errs else
              f"| {k} | {len(rs)} | {sum(r['ok'] for r in rs)} | – |")
    total = sum(r["ok"] for r in rows)
    print(f"| **all** | {len(rows)} | {total} | |")
    for r in rows:
        if not r["ok"]:
            why = "; ".join(r.get("notes") or [])
            print(f"{'PENDING' if r.get('needs') else 'WRONG'} {r['case']}: expected {r['expect']}, got {r['got']}"
                  + (f" [{why}]" if why else "") + f" ({r['summary']})"
                  + (f" — waits for {r['needs']}" if r.get("needs") else ""))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--family", default="sdxl", choices=testkit.FAMILIES)
    ap.add_argument("--size", default="tiny")
    ap.add_argument("--out", help="directory for the zoo (default: a temp dir, removed afterwards)")
    ap.add_argument("--keep", action="store_true", help="keep the generated files")
    ap.add_argument("--json", help="also write the per-case rows to this file")
    ap.add_argument("--rescore", action="store_true", help="score the zoo already in --out without rebuilding it")
    args = ap.parse_args(argv)
    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="fpzoo-"))
    try:
        if args.rescore:
            refs, cases = load(out / "models")
            shutil.rmtree(out / "refs", ignore_errors=True)
        else:
            refs, cases = build(out / "models", args.family, args.size)
        dbs = register(out / "models", refs, out / "refs")
        rows = score(out / "models", cases, dbs)
        print_table(rows)
        tagged = check_merge_tags(out / "models", out / "refs" / "full")
        print(f"\n50/50 merge through --write-tags: {'right' if tagged['ok'] else 'WRONG'}: "
              f"base_model {tagged['base_model']!r}, lineage {tagged['lineage']}, merge {tagged['merge']}")
        if args.json:
            Path(args.json).write_text(json.dumps(rows + [tagged], indent=1))
        return 0 if all(r["ok"] or r.get("needs") for r in rows) and tagged["ok"] else 1
    finally:
        if not args.keep and not args.out:
            shutil.rmtree(out, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
