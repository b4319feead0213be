"""A labelled set of claims, LoRA fits and fine-tunes, scored against what the generator built.

    python bench/claims.py [--out DIR]

A tiny-width SDXL lineage (real key names): SDXL base -> Pony-like (35 %), SDXL base ->
Illustrious-like (30 %) -> NoobAI-like (15 %), SDXL base -> Animagine-like (30 %, *not*
registered), an independent SDXL model (related to nothing), fine-tunes of each (5 %), and
merges of Pony and Illustrious. Each checkpoint carries claims in every place users meet them
(modelspec title and architecture, kohya's base name, an A1111 merge recipe, Civitai Helper's
.civitai.info, Stability Matrix's .cm-info.json, LoRA Manager's .metadata.json, the file name),
some true, some false (a stale label, the wrong model line, a wrong recipe, the wrong
architecture). kohya LoRAs name the checkpoint they were trained on by SHA-256.

The expected check of each claim follows from what was built and what is registered, never
from fpcore: a true claim naming a registered model line (or the architecture) is consistent,
a false one contradicts; one naming a line nothing registered stands for is unverifiable.
A LoRA trained on X fits a checkpoint whose true lineage (a merge: a member's) holds X, and
cannot be told for a checkpoint related to nothing registered or for a LoRA naming nothing.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import testkit  # noqa: E402
from fpcore.identify import add_reference  # noqa: E402
from fpcore.refs.library import RefDB  # noqa: E402
from fpcore.scan import scan_folder  # noqa: E402

#: registered references: name -> (file, parent)
REFS = {"SDXL base 1.0": ("base", None), "Pony Diffusion V6 XL": ("pony", "SDXL base 1.0"),
        "Illustrious XL v0.1": ("illu", "SDXL base 1.0"), "NoobAI-XL v1.1": ("noob", "Illustrious XL v0.1")}
#: the true lineage of every generated checkpoint, in model lines (the generator's record)
LINES = {"pony_ft": ["sdxl", "pony"], "illu_ft": ["sdxl", "illustrious"], "noob_ft": ["sdxl", "illustrious", "noobai"],
         "anim_ft": ["sdxl", "animagine"], "indep": []}
#: merges: members' lines and weights
MERGES = {"mix73": {"pony": 0.7, "illu": 0.3}, "mix46": {"pony": 0.4, "illu": 0.6}}
REGISTERED_LINES = {"sdxl", "pony", "illustrious", "noobai"}
#: claimable model lines: (Civitai baseModel label, title word, line)
LABELS = {"pony": ("Pony", "Pony"), "illustrious": ("Illustrious", "Illustrious XL"),
          "noobai": ("NoobAI", "NoobAI-XL"), "animagine": ("Animagine", "Animagine XL"), "sdxl": ("SDXL 1.0", "SDXL")}


def build(d: Path) -> None:
    t0 = time.perf_counter()
    spec = testkit.checkpoint_spec("sdxl", "tiny")
    base = testkit.random_state_dict(spec, 1)
    sds = {"base": base, "pony": testkit.finetune(base, 0.35, 2), "illu": testkit.finetune(base, 0.30, 3),
           "anim": testkit.finetune(base, 0.30, 6), "indep": testkit.random_state_dict(spec, 99)}
    sds["noob"] = testkit.finetune(sds["illu"], 0.15, 4)
    att = r"attn[12]\."
    for n, parent, seed in (("pony_ft", "pony", 11), ("illu_ft", "illu", 12), ("noob_ft", "noob", 13),
                            ("anim_ft", "anim", 14)):
        sds[n] = testkit.finetune(sds[parent], 0.05, seed, only=att)
    for n, ws in MERGES.items():
        sds[n] = testkit.merge([(sds[m], w) for m, w in ws.items()])
    # what changed: fine-tunes of Pony touching one known part each
    sds["d_attn"] = testkit.finetune(sds["pony"], 0.05, 21, only=r"attn[12]\.to_(q|k|v|out\.0)\.")
    sds["d_te"] = testkit.finetune(sds["pony"], 0.05, 22, comps=("clip_l", "clip_g"))
    sds["d_all"] = testkit.finetune(sds["pony"], 0.05, 23, comps=("unet", "clip_l", "clip_g"))
    for n, sd in sds.items():
        testkit.write_safetensors(d / f"{n}.safetensors", sd, "F16")
    lora = testkit.random_state_dict(testkit.extra.lora_kohya_sdxl(4), 7)
    testkit.write_safetensors(d / "lora.safetensors", lora, "F16")
    print(f"built in {time.perf_counter() - t0:.1f} s", file=sys.stderr)


def _sidecar(model: Path, kind: str, label: str) -> None:
    """The sidecar each tool writes, holding ``label`` as the base model (their own field names)."""
    if kind == "civitai_info":
        model.with_name(model.stem + ".civitai.info").write_text(json.dumps({"baseModel": label, "model": {}}))
    elif kind == "cm-info":
        model.with_name(model.stem + ".cm-info.json").write_text(json.dumps({"BaseModel": label, "ModelName": "m"}))
    elif kind == "metadata":
        model.with_name(model.stem + ".metadata.json").write_text(json.dumps({"base_model": label, "model_name": "m"}))


def _expect(claimed_line: str, true_lines: set) -> str:
    if claimed_line == "sdxl":          # the architecture's own base: every SDXL model is SDXL
        return "consistent"
    if claimed_line not in REGISTERED_LINES:
        return "unverifiable"
    return "consistent" if claimed_line in true_lines else "contradicts"


def claim_cases(d: Path, work: Path, sha: dict) -> list[tuple[Path, str, str, str]]:
    """(file, claim key, class, expected check) for every claim written."""
    cases = []
    lines = dict(LINES)
    for n, ws in MERGES.items():
        lines[n] = sorted({x for m in ws for x in LINES[{"pony": "pony_ft", "illu": "illu_ft"}[m]]})
    sources = ["civitai_info", "cm-info", "metadata"]
    for i, (name, true) in enumerate(sorted(lines.items())):
        true_set = set(true)
        for j, line in enumerate(LABELS):
            label, title = LABELS[line]
            src = sources[(i + j) % len(sources)]
            f = work / f"c{i}_{j}.safetensors"
            meta = {"modelspec.title": f"{title} based model"} if j % 2 == 0 else {}
            testkit.rewrite_metadata(d / f"{name}.safetensors", f, meta)
            _sidecar(f, src, label)
            exp = _expect(line, true_set)
            key = {"civitai_info": f"baseModel in {f.stem}.civitai.info", "cm-info": f"BaseModel in {f.stem}.cm-info.json",
                   "metadata": f"base_model in {f.stem}.metadata.json"}[src]
            cases.append((f, key, "base model line (sidecar)", exp))
            if meta:
                cases.append((f, "modelspec.title", "base model line (title)", exp))
        # architecture claims: SDXL (true) and SD 1.5 (false)
        for k, (arch, exp) in enumerate((("stable-diffusion-xl-v1-base", "consistent"),
                                         ("stable-diffusion-v1", "contradicts"))):
            f = work / f"a{i}_{k}.safetensors"
            testkit.rewrite_metadata(d / f"{name}.safetensors", f, {"modelspec.architecture": arch})
            cases.append((f, "modelspec.architecture", "architecture", exp))
    # A1111 recipes: (file, primary, secondary, multiplier, expected)
    refsha = {k: sha[v[0]] for k, v in REFS.items()}
    recipes = [("mix73", "Pony Diffusion V6 XL", "Illustrious XL v0.1", 0.3, "consistent"),
               ("mix73", "Pony Diffusion V6 XL", "Illustrious XL v0.1", 0.5, "contradicts"),
               ("mix46", "Pony Diffusion V6 XL", "Illustrious XL v0.1", 0.6, "consistent"),
               ("mix46", "Pony Diffusion V6 XL", "Illustrious XL v0.1", 0.2, "contradicts"),
               ("mix73", "Pony Diffusion V6 XL", "NoobAI-XL v1.1", 0.3, "contradicts"),
               ("pony_ft", "Pony Diffusion V6 XL", "Illustrious XL v0.1", 0.5, "contradicts"),
               ("illu_ft", "Illustrious XL v0.1", "Pony Diffusion V6 XL", 0.0, "consistent")]
    for k, (name, a, b, m, exp) in enumerate(recipes):
        f = work / f"r{k}.safetensors"
        recipe = {"type": "webui", "primary_model_hash": refsha[a], "secondary_model_hash": refsha[b],
                  "interp_method": "Weighted sum", "multiplier": m}
        testkit.rewrite_metadata(d / f"{name}.safetensors", f, {"sd_merge_recipe": json.dumps(recipe)})
        cases.append((f, "sd_merge_recipe", "A1111 merge recipe", exp))
    return cases


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", help="keep the files in DIR")
    args = ap.parse_args()
    root = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="fpcore-claims-"))
    root.mkdir(parents=True, exist_ok=True)
    d, work = root / "built", root / "work"
    d.mkdir(exist_ok=True)
    if work.exists():
        shutil.rmtree(work)
    work.mkdir()
    try:
        if not (d / "lora.safetensors").exists():
            build(d)
        sha = {p.stem: hashlib.sha256(p.read_bytes()).hexdigest() for p in d.glob("*.safetensors")}
        db = RefDB(root / "refs", builtin_dir=root / "none")
        for name, (f, parent) in REFS.items():
            if name not in db.refs:
                add_reference(db, d / f"{f}.safetensors", name, parent=parent)
        score: Counter = Counter()
        total: Counter = Counter()
        wrong = []
        from fpcore.identify import identify
        for f, key, klass, exp in claim_cases(d, work, sha):
            rep = identify(f, db, hashes=False)
            got = next((c["check"] for c in rep["claims"] if c["key"] == key), "missing")
            total[klass] += 1
            score[klass] += got == exp
            if got != exp:
                wrong.append(f"{klass}: {f.name} {key}: expected {exp}, got {got}")
        # LoRA fits: a folder of the checkpoints and LoRAs trained on each reference (by SHA-256)
        folder = work / "folder"
        folder.mkdir()
        trained = {"pony": "pony", "illu": "illustrious", "noob": "noobai", "base": "sdxl", None: None}
        for ref, _ in trained.items():
            meta = {"ss_new_sd_model_hash": sha[ref]} if ref else {}
            testkit.rewrite_metadata(d / "lora.safetensors", folder / f"lora_{ref or 'none'}.safetensors", meta)
        ckpts = {**{n: LINES[n] for n in LINES}, "mix73": None}
        for n in ckpts:
            shutil.copy(d / f"{n}.safetensors", folder / f"{n}.safetensors")
        res = scan_folder(folder, db=db, use_cache=False)
        for rep in res["reports"]:
            stem = Path(rep["path"]).stem
            if not stem.startswith("lora_"):
                continue
            line = trained[None if stem == "lora_none" else stem[5:]]
            for row in rep["fits"]:
                c = Path(row["path"]).stem
                true = set(LINES[c]) if c in LINES else {"sdxl", "pony", "illustrious"}
                exp = "unknown" if line is None or not true else ("yes" if line in true else "no")
                total["LoRA fits"] += 1
                score["LoRA fits"] += row["fit"] == exp
                if row["fit"] != exp:
                    wrong.append(f"LoRA fits: {stem} on {c}: expected {exp}, got {row['fit']} ({row['reason']})")
        for n, exp in (("d_attn", "UNet attention only, like a baked LoRA"), ("d_te", "text encoders only"),
                       ("d_all", "everything, like full training"), ("pony_ft", "UNet attention only, like a baked LoRA")):
            rep = identify(d / f"{n}.safetensors", db, hashes=False)
            got = (rep.get("delta") or {}).get("summary")
            total["what changed"] += 1
            score["what changed"] += got == exp
            if got != exp:
                wrong.append(f"what changed: {n}: expected {exp!r}, got {got!r}")
        print("| claims of | checked | right |")
        print("|---|---|---|")
        for k in total:
            print(f"| {k} | {total[k]} | {score[k]} |")
        print(f"| **all** | **{sum(total.values())}** | **{sum(score.values())}** |")
        for w in wrong:
            print("  wrong:", w)
        return 0
    finally:
        if not args.out:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
