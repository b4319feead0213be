"""The matching decisions themselves, on in-memory fingerprints (no files): alignment,
same-weights rounding and ties, descent shares, merge fits (global and per block), the
named decisions and reason codes."""
from __future__ import annotations

import math

import ml_dtypes
import numpy as np
import pytest

from _fpmem import Ref, Tree, dare_average, finetune, make_fp, shared_direction, weights
from fpcore import match
from fpcore.match import Code, Confidence, decisions


def _blocks(seed):
    sd = {}
    for i, g in enumerate(("input_blocks", "middle_block", "output_blocks")):
        sd.update(weights(seed * 10 + i, n=8, prefix=f"unet:{g}"))
    return sd


@pytest.fixture(scope="module")
def family():
    base = _blocks(1)
    sh = shared_direction(base)
    a = finetune(base, 0.30, 11, sh)
    b = finetune(base, 0.30, 12, sh)
    a_child = finetune(a, 0.10, 21, sh)
    return {"Base": base, "A": a, "B": b, "A1": a_child, "Indep": _blocks(99), "shared": sh}


@pytest.fixture(scope="module")
def refs(family):
    return [Ref(n, make_fp(family[n])) for n in ("Base", "A", "B", "A1")]


TREE = Tree({"Base": None, "A": "Base", "B": "Base", "A1": "A"})


# -- alignment ------------------------------------------------------------------------------
def test_align_keeps_shared_tensors_and_scales_each_alike():
    sd = weights(1, n=4)
    other = dict(sd)
    other["unet:input_blocks.0.0.weight"] = sd["unet:input_blocks.0.0.weight"] * 1000.0   # a huge tensor
    del other["unet:input_blocks.3.0.weight"]                                             # missing in the ref
    other["unet:input_blocks.2.0.weight"] = np.zeros((32, 64))                            # another shape
    al = match.align(make_fp(sd), [make_fp(other, "F32")], "unet")
    assert al.keys == ["unet:input_blocks.0.0.weight", "unet:input_blocks.1.0.weight"]
    assert len(al.x) == 2 * 128            # 2-D only, one 128-value run per tensor
    # one scale per tensor over the file and every reference: each tensor has unit joint RMS,
    # however large it is (the x1000 tensor weighs no more than the other)
    for t in (0, 1):
        sel = al.tensor_of == t
        assert np.mean(al.x[sel] ** 2 + al.R[sel, 0] ** 2) / 2 == pytest.approx(1.0)
    assert np.sqrt(np.mean(al.R[al.tensor_of == 0, 0] ** 2)) == pytest.approx(np.sqrt(2), rel=1e-3)
    assert np.all(np.abs(np.bincount(al.tensor_of, al.xc)) < 1e-9)     # centred per tensor


def test_align_drops_non_finite_rows():
    sd = weights(2, n=3)
    bad = {k: v.copy() for k, v in sd.items()}
    bad["unet:input_blocks.1.0.weight"][-1, :] = np.nan      # last row: inside the sampled run (the end)
    al = match.align(make_fp(sd), [make_fp(bad)], "unet")
    assert len(al.x) == 3 * 128 - 64 and np.all(np.isfinite(al.R))


# -- same weights: rounding and ties -------------------------------------------------------
def test_precision_copies_are_same_weights_with_confidence_one(family, refs):
    for dt in ("F32", "BF16", "F8_E4M3"):
        v = match.analyse(make_fp(family["A"], dt), "unet", refs, TREE)
        assert (v.relation, v.ref, v.code, v.confidence) == ("same_weights", "A", Code.SAME_WEIGHTS, 1.0), dt


def test_fp8_copy_of_fp32_master_against_fp16_reference_double_rounding():
    # 1.0625 is the midpoint of fp8 e4m3 neighbours 1.0 and 1.125: fp16 stores the tie (the
    # 2^-20 is below fp16 spacing), so fp8(fp16(w)) = 1.0 (even) while fp8(w) = 1.125
    w = 1.0625 + 2.0 ** -20
    assert float(np.float16(w)) == 1.0625
    assert float(ml_dtypes.float8_e4m3fn(np.float16(w))) == 1.0
    assert float(ml_dtypes.float8_e4m3fn(np.float32(w))) == 1.125
    sd = weights(3, n=6)
    for k in sd:
        if sd[k].ndim == 2:
            sd[k][-1, -16:] = w                     # inside the sampled run
    ref = make_fp(sd, "F16")
    f8 = make_fp(sd, "F8_E4M3")
    mm, cov = match.mismatch_fraction(f8, ref, "unet")
    assert (mm, cov) == (0.0, 1.0)
    # not a tie: one fp16 step below the midpoint rounds to 1.0 in fp8, so a file holding
    # 1.125 is a different weight
    sd2 = {k: v.copy() for k, v in sd.items()}
    for k in sd2:
        if sd2[k].ndim == 2:
            sd2[k][-1, -16:] = 1.0625 - 2.0 ** -10
    mm2, _ = match.mismatch_fraction(make_fp(sd2, "F16"), make_fp(sd, "F8_E4M3"), "unet")
    assert mm2 == pytest.approx(6 * 16 / (6 * 128 + 6 * 32))


def test_bf16_and_fp16_copies_of_one_fp32_master_are_the_same_weights():
    w = 1.0 + 2.0 ** -8 + 2.0 ** -20          # fp16 keeps the bf16 tie; bf16 rounds up directly
    assert float(ml_dtypes.bfloat16(np.float16(w))) == 1.0 and float(ml_dtypes.bfloat16(np.float32(w))) == 1.0078125
    sd = weights(4, n=4)
    for k in sd:
        sd[k].reshape(-1)[-8:] = w
    mm, _ = match.mismatch_fraction(make_fp(sd, "BF16"), make_fp(sd, "F16"), "unet")
    assert mm == 0.0


def test_light_finetune_is_never_same_weights_even_in_fp8(family, refs):
    ft = finetune(family["A"], 0.002, 31, family["shared"])      # 0.2 %: below fp8 rounding noise
    v = match.analyse(make_fp(ft, "F8_E4M3"), "unet", refs, TREE)
    assert v.relation != "same_weights"
    assert v.candidates[0].mismatch > match.SAME_MAX_MISMATCH


def test_same_weights_confidence_falls_to_the_limit():
    sd = weights(5, n=40)
    ref = make_fp(sd)
    bumped = {k: v.copy() for k, v in sd.items()}
    bumped["unet:input_blocks.0.0.weight"][-1, -3:] += 0.5        # 3 of ~6400 values differ
    v = match.analyse(make_fp(bumped), "unet", [Ref("R", ref)])
    mm = 3 / (40 * 128 + 40 * 32)
    assert v.relation == "same_weights"
    assert v.confidence == round(1 - mm / match.SAME_MAX_MISMATCH * (1 - decisions.SAME_CONF_AT_LIMIT), 3)


# -- related or not ------------------------------------------------------------------------
def test_independent_model_is_not_related(family, refs):
    v = match.analyse(make_fp(family["Indep"]), "unet", refs, TREE)
    assert (v.relation, v.code, v.ref) == ("unknown", Code.NOT_RELATED, None)
    assert all(abs(c.z) < match.RELATED_MIN_Z for c in v.candidates)
    # confidence 1 - cos to the closest reference: independent weights have cos ~ 0 (sampling
    # noise 1 / sqrt(3072 sampled values) = 0.018)
    assert v.confidence == pytest.approx(1.0, abs=0.04) and v.confidence <= 1.0


def test_a_weak_cosine_is_no_kinship_and_sets_the_confidence(family, refs):
    """A file 0.15 of Base plus independent weights (per value: 0.15 * base + sqrt(1 - 0.15^2) *
    independent, both of one scale): cos to Base is 0.15 by construction, so the confidence of
    "not related" is 1 - 0.15. Its z (0.15 * sqrt(3072) = 8.3) passes RELATED_MIN_Z: only the
    cosine floor RELATED_MIN_COS keeps it unrelated."""
    a = 0.15
    x = {k: a * family["Base"][k] + math.sqrt(1 - a * a) * family["Indep"][k] for k in family["Base"]}
    v = match.analyse(make_fp(x), "unet", refs, TREE)
    assert (v.relation, v.code, v.ref) == ("unknown", Code.NOT_RELATED, None)
    assert v.confidence == pytest.approx(1 - a, abs=0.04)
    assert "not related" in v.reason and "Base" in v.reason


def test_nothing_comparable_has_no_confidence(family):
    other = {k.replace("unet:", "unet:other_"): v for k, v in family["Base"].items()}
    v = match.analyse(make_fp(family["Base"]), "unet", [Ref("X", make_fp(other))])
    assert (v.relation, v.code, v.confidence) == ("unknown", Code.NOTHING_COMPARABLE, None)
    v = match.analyse(make_fp(family["Base"]), "unet", [])
    assert (v.code, v.confidence) == (Code.NO_REFERENCE, None)


# -- descent -----------------------------------------------------------------------------------
def test_descent_share_of_a_child_and_of_a_sibling(family, refs):
    # a light fine-tune of A1 carries all of A's and A1's training: share ~1 at each step
    f = finetune(family["A1"], 0.02, 41, family["shared"])
    v = match.analyse(make_fp(f), "unet", refs, TREE)
    assert (v.relation, v.ref, v.code) == ("derivative", "A1", Code.DESCENDS)
    by = {c.ref: c for c in v.candidates}
    assert by["A"].share == pytest.approx(1.0, abs=0.05) and by["A1"].share == pytest.approx(1.0, abs=0.1)
    assert v.confidence == Confidence.CLEAR
    # a sibling of A (another fine-tune of Base) carries none of A's own training
    s = finetune(family["Base"], 0.10, 42, family["shared"])
    v = match.analyse(make_fp(s), "unet", refs, TREE)
    assert (v.relation, v.ref) == ("derivative", "Base")
    by = {c.ref: c for c in v.candidates}
    assert abs(by["A"].share) < 0.2 and abs(by["B"].share) < 0.2


def test_far_from_a_parentless_base_is_qualified(family, refs):
    f = finetune(family["Base"], 0.6, 43, family["shared"])
    v = match.analyse(make_fp(f), "unet", refs, TREE)
    assert (v.relation, v.ref, v.code) == ("derivative", "Base", Code.FAR_FROM_BASE)
    assert v.confidence <= Confidence.QUALIFIED


def test_far_from_an_orphan_is_unplaced(family):
    f = finetune(family["A"], 0.6, 44, family["shared"])
    v = match.analyse(make_fp(f), "unet", [Ref("A", make_fp(family["A"]))], Tree({"A": "Base"}, orphans={"A"}))
    assert (v.relation, v.ref, v.code, v.confidence) == ("unknown", None, Code.PARENT_NOT_REGISTERED,
                                                         Confidence.UNPLACED)


# -- merges ----------------------------------------------------------------------------------
def test_affine_nnls_recovers_known_weights():
    rng = np.random.default_rng(5)
    R = rng.normal(size=(4000, 3))
    x = R @ np.array([0.2, 0.0, 0.8])
    w = match.affine_nnls(R, x)
    assert w == pytest.approx([0.2, 0.0, 0.8], abs=1e-4) and w.sum() == pytest.approx(1.0)
    # outside the simplex: weights stay non-negative and sum to one
    w = match.affine_nnls(R, R @ np.array([1.5, -0.5, 0.0]))
    assert np.all(w >= 0) and w.sum() == pytest.approx(1.0)


def test_merge_weights_recovered(family, refs):
    m = {k: 0.35 * family["A"][k] + 0.65 * family["B"][k] for k in family["A"]}
    v = match.analyse(make_fp(m), "unet", refs, TREE)
    assert (v.relation, v.code) == ("merge", Code.MERGE)
    assert dict(v.merge) == pytest.approx({"B": 0.65, "A": 0.35}, abs=0.01)
    assert v.confidence > 0.9


def test_block_weighted_merge_recovered(family, refs):
    ws = {"input_blocks": 0.8, "middle_block": 0.5, "output_blocks": 0.2}
    m = {k: ws[k.split(":")[1].split(".")[0]] * family["A"][k] + (1 - ws[k.split(":")[1].split(".")[0]]) * family["B"][k]
         for k in family["A"]}
    v = match.analyse(make_fp(m), "unet", refs, TREE)
    assert (v.relation, v.code) == ("merge", Code.BLOCK_MERGE)
    got = {g: dict(r) for g, r in v.merge_blocks.items()}
    assert got["input"] == pytest.approx({"A": 0.8, "B": 0.2}, abs=0.02)
    assert got["middle"] == pytest.approx({"A": 0.5, "B": 0.5}, abs=0.02)
    assert got["output"] == pytest.approx({"A": 0.2, "B": 0.8}, abs=0.02)


def test_merge_not_allowed_gives_nearest(family, refs):
    """The path of every component but the denoiser (no merge verdicts there). The file is
    Base + (dA + dB) / 2 (dA, dB: A's and B's training), so each child's share of its training
    is (1 + cos(dA, dB)) / 2, about 0.5: above SHARE_MIN, but not beyond what siblings share.
    The nearest place in the tree is Base, with the doubt named (AMBIGUOUS)."""
    m = {k: 0.5 * family["A"][k] + 0.5 * family["B"][k] for k in family["A"]}
    v = match.analyse(make_fp(m), "unet", refs, TREE, allow_merge=False)
    assert (v.relation, v.ref, v.merge) == ("derivative", "Base", [])
    assert v.confidence == Confidence.AMBIGUOUS
    da = np.concatenate([(family["A"][k] - family["Base"][k]).ravel() for k in m])
    db = np.concatenate([(family["B"][k] - family["Base"][k]).ravel() for k in m])
    want = (1 + float(da @ db) / float(np.linalg.norm(da) * np.linalg.norm(db))) / 2
    by = {c.ref: c for c in v.candidates}
    assert by["A"].share == pytest.approx(want, abs=0.03) and by["B"].share == pytest.approx(want, abs=0.03)
    assert "may descend from A" in v.reason and "may descend from B" in v.reason
    # the same file where merges are allowed: the merge of A and B it is
    v = match.analyse(make_fp(m), "unet", refs, TREE)
    assert v.relation == "merge" and dict(v.merge) == pytest.approx({"A": 0.5, "B": 0.5}, abs=0.01)


def test_dare_merge_seen_through_trainings(family, refs):
    """DARE: each reference's own training, 90 % of elements dropped and the rest rescaled,
    averaged onto Base. No weighted average of whole models matches it elementwise."""
    out = dare_average(family)
    v = match.analyse(make_fp(out), "unet", refs, TREE)
    assert v.relation == "merge" and {n for n, _ in v.merge} >= {"A", "B"}
    assert v.code in (Code.DELTA_MERGE, Code.MERGE)


# -- named decisions -------------------------------------------------------------------------
def test_every_decision_constant_is_documented():
    import inspect
    src = inspect.getsource(decisions)
    names = [n for n in dir(decisions) if n.isupper()]
    assert len(names) >= 25
    lines = src.splitlines()
    for n in names:
        i = next(j for j, ln in enumerate(lines) if ln.startswith(f"{n} = "))
        assert lines[i - 1].startswith("#:"), f"{n} has no reason"


def test_confidence_levels_defined_once():
    fixed = {lv.value for lv in Confidence.LEVELS}
    assert fixed == {Confidence.CERTAIN, Confidence.CLEAR, Confidence.QUALIFIED, Confidence.AMBIGUOUS,
                     Confidence.UNPLACED, None}
    assert all(lv.meaning for lv in Confidence.LEVELS)


#: the reason codes as they appear in JSON reports (``code``): hosts and scripts match these strings
WIRE_CODES = {"IDENTICAL": "identical", "SAME_WEIGHTS": "same_weights", "MERGE": "merge", "BLOCK_MERGE": "block_merge",
              "DELTA_MERGE": "delta_merge", "DESCENDS": "descends", "SIBLING_AMBIGUOUS": "sibling_ambiguous",
              "FAR_FROM_BASE": "far_from_base", "PARENT_NOT_REGISTERED": "parent_not_registered",
              "NOT_RELATED": "not_related", "NOTHING_COMPARABLE": "nothing_comparable",
              "NO_REFERENCE": "no_reference", "TOO_LITTLE_COMPARABLE": "too_little_comparable"}


def test_reason_codes_on_verdicts():
    codes = {n: getattr(Code, n) for n in dir(Code) if n.isupper()}
    assert {n: codes.get(n) for n in WIRE_CODES} == WIRE_CODES          # the strings reports carry
    assert len(set(codes.values())) == len(codes)                        # no two codes alike
    v = match.CompVerdict("unet", "unknown")
    assert {n: getattr(v, n, None) for n in codes} == codes              # each reachable from a verdict
    assert v.code == "not_related"                                       # a fresh verdict's code


def test_summary_is_chosen_by_code_not_by_text():
    from types import SimpleNamespace
    from fpcore.identify import _summary
    a = SimpleNamespace(family="sdxl", dtype="fp16")
    placed = _summary("unknown", None, [], {}, a, 3, "x", code=Code.PARENT_NOT_REGISTERED)
    assert "not placeable" in placed
    plain = _summary("unknown", None, [], {}, a, 3, "far from everything", code=Code.NOT_RELATED)
    assert "not placeable" not in plain


# -- evidence floor (issue 13) ------------------------------------------------------------------
def _sliver_file(seed, big_shape=(1000, 1000)):
    sd = weights(seed, n=20, shape=(16, 16), prefix="other:small")
    sd = {k: v for k, v in sd.items() if v.ndim == 2}
    return sd, np.random.default_rng(seed + 1).normal(0, 0.05, big_shape)


def test_same_weights_needs_nearly_all_parameters():
    """20 small tensors equal a reference's; one big tensor (99.5 % of the parameters) is not
    in it. By sampled values the reference covers 95 %: without the parameter share this
    was same_weights."""
    sd, big = _sliver_file(6)
    ref = make_fp({**sd, "other:big.weight": np.zeros((999, 1000))})
    v = match.analyse(make_fp({**sd, "other:big.weight": big}), "model", [Ref("R", ref)])
    assert v.candidates[0].coverage >= match.SAME_MIN_COVERAGE and v.candidates[0].mismatch == 0
    assert (v.relation, v.code, v.confidence) == ("unknown", Code.TOO_LITTLE_COMPARABLE, None)
    assert v.evidence.tensors == 20 and v.evidence.component_share < 0.01
    assert "too little of the file is comparable" in v.reason


def test_any_verdict_needs_a_floor_of_parameters():
    sd, big = _sliver_file(7)
    ref = make_fp({**sd, "other:big.weight": np.zeros((999, 1000))})
    ft = finetune(sd, 0.05, 71)
    v = match.analyse(make_fp({**ft, "other:big.weight": big}), "model", [Ref("R", ref)])
    assert (v.relation, v.code) == ("unknown", Code.TOO_LITTLE_COMPARABLE)
    # the same fine-tune without the big tensor is a derivative resting on all of it
    v = match.analyse(make_fp(ft), "model", [Ref("R", make_fp(sd))])
    assert v.relation == "derivative" and v.evidence.component_share == pytest.approx(1.0)


def _bert(seed, hidden=64, layers=4, inter=256, vocab=1000):
    """A BERT-like layout (real key names): bare ``encoder.*`` keys look like a VAE and
    ``pooler.*`` like a DiT to the bare-key table."""
    rng = np.random.default_rng(seed)
    sd = {"embeddings.word_embeddings.weight": rng.normal(0, 0.05, (vocab, hidden)),
          "embeddings.position_embeddings.weight": rng.normal(0, 0.05, (128, hidden)),
          "embeddings.LayerNorm.weight": 1 + rng.normal(0, 0.01, hidden),
          "embeddings.LayerNorm.bias": rng.normal(0, 0.01, hidden),
          "pooler.dense.weight": rng.normal(0, 0.05, (hidden, hidden)), "pooler.dense.bias": np.zeros(hidden)}
    for i in range(layers):
        p = f"encoder.layer.{i}."
        for name, shape in (("attention.self.query", (hidden, hidden)), ("attention.self.key", (hidden, hidden)),
                            ("attention.self.value", (hidden, hidden)), ("attention.output.dense", (hidden, hidden)),
                            ("intermediate.dense", (inter, hidden)), ("output.dense", (hidden, inter))):
            sd[p + name + ".weight"] = rng.normal(0, 0.05, shape)
            sd[p + name + ".bias"] = rng.normal(0, 0.01, shape[0])
        for ln in ("attention.output.LayerNorm", "output.LayerNorm"):
            sd[p + ln + ".weight"] = 1 + rng.normal(0, 0.01, hidden)
            sd[p + ln + ".bias"] = rng.normal(0, 0.01, hidden)
    return sd


def _canon(sd):
    from fpcore import layout
    return {layout.canonical_key(k): v for k, v in sd.items()}


def test_unknown_architecture_is_one_component_and_a_finetune_is_not_same(tmp_path):
    """Only non-pooler weights trained (the pooler untouched): the verdict used to rest on
    the pooler's 160 sampled values and said same_weights."""
    from fpcore import arch, layout
    from fpcore.identify import identify_fingerprint
    from fpcore.refs.library import RefDB

    base = _bert(1)
    trained = {k: (v if k.startswith("pooler.") else v + 0.1 * np.sqrt(np.mean(v * v)) *
                   np.random.default_rng(abs(hash(k)) % 2 ** 32).normal(0, 1, v.shape)) for k, v in base.items()}
    assert {layout.canonical(k)[0] for k in base} >= {"dit", "vae"}     # what the bare-key guesses say
    db = RefDB(tmp_path / "u", builtin_dir=tmp_path / "b")
    fb = make_fp(_canon(base), "F32")
    db.add(fb, "BERT", family="unknown")

    def ident(sd, dt):
        fp = make_fp(_canon(sd), dt)
        a = arch.detect(fp.shape_map(), fp.dtype_map())
        return a, identify_fingerprint(fp, a, db)

    a, rep = ident(trained, "F16")
    assert (a.family, a.components) == ("unknown", [layout.WHOLE])
    assert list(rep["components"]) == [layout.WHOLE]
    assert (rep["verdict"]["relation"], rep["verdict"]["base"]) == ("derivative", "BERT")
    assert rep["verdict"]["evidence"]["share"] > 0.95
    _, rep = ident(base, "F16")
    assert (rep["verdict"]["relation"], rep["verdict"]["base"]) == ("same_weights", "BERT")
    assert rep["components"][layout.WHOLE]["evidence"]["component_share"] == pytest.approx(1.0)
    _, rep = ident(_bert(2), "F16")
    assert rep["verdict"]["relation"] == "unknown"


def test_partial_file_verdict_describes_its_bulk():
    sd = {"clip_l:text_model.a.weight": np.ones((8, 8)), "clip_g:b.weight": np.ones((64, 64)),
          "vae:decoder.c.weight": np.ones((4, 4))}
    fp = make_fp(sd)
    assert match.main_component(fp, ["clip_l", "clip_g", "vae"]) == "clip_g"
    assert match.main_component(fp, ["clip_l", "unet"]) == "unet"


# -- scaled fp8 and GGUF quantised copies (issue 12, defects 4 and 8) ------------------------------
def _scaled_fp8(sd: dict) -> dict:
    """ComfyUI "fp8 scaled" from a master: each 2-D weight as fp8(w / s) with s = max|w| / 448
    next to ``scale_weight``; biases kept in fp16."""
    out = {}
    for k, w in sd.items():
        if w.ndim == 2:
            s = float(np.max(np.abs(w))) / 448.0
            out[k] = (w / s, "F8_E4M3")
            out[k[:-len("weight")] + "scale_weight"] = (np.array([s]), "F32")
        else:
            out[k] = (w, "F16")
    return out


def test_scaled_fp8_from_a_higher_precision_master_is_same_weights(family, refs):
    """fp8(w / s) where the reference holds fp16(w): double rounding, not a difference
    (it was a derivative with ~0.15 % of values one fp8 step off)."""
    fp = make_fp(_scaled_fp8(family["A"]))
    mm, cov = match.mismatch_fraction(fp, refs[1].fp, "unet")
    assert mm == 0.0 and cov >= match.SAME_MIN_COVERAGE       # (the scale_weight scalars are not in the reference)
    v = match.analyse(fp, "unet", refs, TREE)
    assert (v.relation, v.ref, v.confidence) == ("same_weights", "A", 1.0)


@pytest.mark.parametrize("strength", [0.0016, 0.0005])
def test_scaled_fp8_of_a_light_finetune_is_not_same(family, refs, strength):
    """0.16 %: the lightest real fine-tune measured (RESEARCH); 0.05 %: the zoo's lightest."""
    ft = finetune(family["A"], strength, 51, family["shared"])
    v = match.analyse(make_fp(_scaled_fp8(ft)), "unet", refs, TREE)
    assert v.relation != "same_weights"
    assert v.candidates[0].mismatch > 3 * match.SAME_MAX_MISMATCH


def test_precision_by_bytes_names_scaled_fp8():
    from fpcore import arch
    sd = {}
    for i in range(4):
        sd[f"unet:input_blocks.{i}.0.weight"] = np.zeros((64, 64))
        for n in ("bias", "norm.weight", "norm.bias"):
            sd[f"unet:input_blocks.{i}.0.{n}"] = np.zeros(64)
    fp = make_fp(_scaled_fp8(sd))
    assert arch.detect(fp.shape_map(), fp.dtype_map()).dtype == "fp8 (e4m3, scaled)"
    plain = make_fp({k: (v, "F8_E4M3" if v.ndim == 2 else "F16") for k, v in sd.items()})
    assert arch.detect(plain.shape_map(), plain.dtype_map()).dtype == "fp8_e4m3"


def test_gguf_quantised_copy_is_same_weights_and_a_quantised_finetune_is_not(tmp_path, lineage):
    """A GGUF Q8_0 of a UNet, written with the gguf package's quantiser from the fp32 master
    (the reference holds fp16), is the same weights, "quantised Q8_0"; a 1 % fine-tune then
    quantised stays a derivative. Q4_0 / Q5_0 the same."""
    pytest.importorskip("gguf")
    import testkit
    from fpcore.identify import add_reference, identify
    from fpcore.refs.library import RefDB

    db = RefDB(tmp_path / "refs", builtin_dir=tmp_path / "none")
    testkit.write_safetensors(tmp_path / "base.safetensors", lineage["Base"], "F16")
    add_reference(db, tmp_path / "base.safetensors", "Base", hashes=False)
    unet = {k[len("model.diffusion_model."):]: v for k, v in lineage["Base"].items()
            if k.startswith("model.diffusion_model.")}
    ft = testkit.finetune(lineage["Base"], 0.01, 61)
    unet_ft = {k[len("model.diffusion_model."):]: v for k, v in ft.items() if k.startswith("model.diffusion_model.")}
    for q in ("Q8_0", "Q4_0", "Q5_0"):
        testkit.write_gguf(tmp_path / f"unet_{q}.gguf", unet, q)
        rep = identify(tmp_path / f"unet_{q}.gguf", db, hashes=False)
        assert rep["architecture"]["dtype"] == q
        assert (rep["verdict"]["relation"], rep["verdict"]["base"]) == ("same_weights", "Base"), (q, rep["verdict"])
        assert f"quantised {q}" in rep["verdict"]["summary"]
        testkit.write_gguf(tmp_path / f"ft_{q}.gguf", unet_ft, q)
        rep = identify(tmp_path / f"ft_{q}.gguf", db, hashes=False)
        assert rep["verdict"]["relation"] == "derivative", (q, rep["verdict"])


def test_affine_floor_is_a_lower_bound_of_every_merge_fit():
    """The screen that skips the merge fits: never above what a fit leaves (random references,
    related and not, with duplicates), and close to it when nothing can be mixed."""
    from fpcore.match.align import Moments
    from fpcore.match.fits import affine_floor, fit_merge
    rng = np.random.default_rng(7)
    for trial in range(60):
        n, k = 2000, int(rng.integers(2, 7))
        base = rng.standard_normal(n)
        R = np.stack([base + rng.uniform(0.01, 1.0) * rng.standard_normal(n) for _ in range(k)], axis=1)
        if trial % 5 == 0:
            R[:, 1] = R[:, 0]                                    # two equal references
        w_true = rng.dirichlet(np.ones(k)) if trial % 2 else np.eye(k)[0]
        x = R @ w_true + rng.uniform(0, 0.5) * rng.standard_normal(n)
        M = np.vstack([R.T, x])
        noise = rng.uniform(0, 1e-3, k + 1)
        m = Moments(M @ M.T, n, float(noise[-1]), noise[:-1])
        _, e = fit_merge(m, list(range(k)))
        assert affine_floor(m) <= e + 1e-12, trial
    # a fine-tune among siblings: the floor is most of the best single residual
    sib = np.stack([base + 0.3 * rng.standard_normal(n) for _ in range(4)], axis=1)
    x = sib[:, 0] + 0.1 * rng.standard_normal(n)
    M = np.vstack([sib.T, x])
    m = Moments(M @ M.T, n, 0.0, np.zeros(4))
    single = m.excess(np.eye(4)[0])
    assert 0.8 * single < affine_floor(m) <= single
