"""fpcore.match piece by piece, on in-memory fingerprints and hand-made inputs: what a candidate
and an evidence record serialise to, the evidence floor on hand-written results, cosines and
finite shares of edge cases, the block-quantisation grid, mismatch counts with mixed dtypes,
another layout and the early stop, candidates left out of the alignment, and the wording of
reasons. Expected values are worked out by hand from how each input was built."""
from __future__ import annotations

import math
import re

import numpy as np
import pytest

from _fpmem import Ref, Tree, dare_average, finetune, make_fp, shared_direction, weights
from fpcore import match
from fpcore.match import Code, Confidence, quant
from fpcore.match.align import MISMATCH_PREFIX, cos, finite_share
from fpcore.match.analyse import Candidate
from fpcore.match.evidence import Evidence, floor_file_verdict


# -- serialised forms -------------------------------------------------------------------------------
def test_candidate_json_rounds_each_figure():
    c = Candidate("A", 0.123456, 0.98765, 54.2961, 0.203, 0.0012345678, 0.99951, share=0.53333, related=True)
    assert c.to_json() == {"ref": "A", "score": 0.1235, "cos": 0.9877, "z": 54.3, "distance": 0.203,
                           "coverage": 1.0, "related": True, "mismatch": 0.00123, "share": 0.533}
    d = Candidate("B", 0.0, 0.0, 0.0, math.inf, None, 0.2).to_json()
    assert "mismatch" not in d and "share" not in d and d["related"] is False and d["distance"] == math.inf
    assert d["coverage"] == 0.2


def test_evidence_json_rounds_shares():
    e = Evidence(values=300, tensors=3, params=1234, share=0.123456, component_share=0.654321)
    assert e.to_json() == {"values": 300, "tensors": 3, "params": 1234, "share": 0.1235, "component_share": 0.6543}


# -- the evidence floor on hand-written results -------------------------------------------------------
class _Fp:
    """What floor_file_verdict asks a fingerprint: its parameter count."""

    def __init__(self, total):
        self.total = total

    def params_of(self, comp):
        return self.total


def _result(rel, comps):
    return {"verdict": {"relation": rel, "base": "B", "lineage": ["B"], "confidence": 0.9, "code": "descends",
                        "reason": "r"}, "components": comps}


def test_a_derivative_resting_on_a_tenth_of_the_file_is_unknown():
    r = _result("derivative", {"unet": {"relation": "derivative", "confidence": 0.9,
                                        "evidence": {"values": 100, "tensors": 2, "params": 100}}})
    assert floor_file_verdict(r, _Fp(1000)) is True
    v = r["verdict"]
    assert (v["relation"], v["base"], v["lineage"], v["confidence"], v["code"]) == ("unknown", None, [], None,
                                                                                  Code.TOO_LITTLE_COMPARABLE)
    assert v["reason"] == ("too little of the file is comparable: the compared tensors cover 10.0% of its "
                           "parameters; a verdict needs 20%")
    assert v["evidence"] == {"values": 100, "tensors": 2, "params": 100, "share": 0.1}


def test_same_weights_must_cover_nearly_all_of_the_file():
    comps = {"unet": {"relation": "same_weights", "confidence": 1.0, "evidence": {"values": 9, "tensors": 1,
                                                                                  "params": 900}},
             "clip_l": {"relation": "derivative", "confidence": 0.9, "evidence": {"values": 1, "tensors": 1,
                                                                                 "params": 60}},
             "vae": {"relation": "unknown", "confidence": 0.99, "evidence": {"values": 1, "tensors": 1}}}
    r = _result("same_weights", comps)
    assert floor_file_verdict(r, _Fp(1000)) is True
    assert r["verdict"]["reason"] == ("too little of the file is comparable: the components with the same weights "
                                      "cover 90.0% of its parameters; same weights needs 95%")
    assert r["verdict"]["evidence"] == {"values": 11, "tensors": 3, "params": 960, "share": 0.96}
    # a compared VAE counts as accepted (REPORTED_ONLY), whatever its relation
    comps["vae"]["evidence"]["params"] = 50
    r = _result("same_weights", comps)
    assert floor_file_verdict(r, _Fp(1000)) is False and r["verdict"]["relation"] == "same_weights"


@pytest.mark.parametrize("rel", ["identical", "unknown", None])
def test_the_floor_leaves_identical_and_unknown_alone(rel):
    r = _result(rel, {"unet": {"relation": "unknown", "confidence": None, "evidence": {"params": 1}}})
    assert floor_file_verdict(r, _Fp(10 ** 6)) is False
    assert r["verdict"]["relation"] == rel and r["verdict"]["base"] == "B"
    assert r["verdict"]["evidence"]["share"] == 0.0


def test_the_floor_is_inclusive_at_twenty_percent():
    r = _result("derivative", {"unet": {"relation": "derivative", "confidence": 0.9, "evidence": {"params": 200}}})
    assert floor_file_verdict(r, _Fp(1000)) is False and r["verdict"]["relation"] == "derivative"


def test_a_file_without_parameters_has_no_share():
    r = _result("derivative", {})
    assert floor_file_verdict(r, _Fp(0)) is True and r["verdict"]["evidence"]["share"] == 0.0


# -- cosines, finite shares -----------------------------------------------------------------------------
def test_cosine_of_a_zero_vector_is_zero():
    x = np.array([3.0, 4.0])
    assert cos(x, np.zeros(2)) == 0.0 and cos(np.zeros(2), x) == 0.0
    assert cos(x, np.array([4.0, -3.0])) == 0.0 and cos(x, 2 * x) == pytest.approx(1.0)
    assert cos(x, np.array([3.0, 0.0])) == pytest.approx(0.6)


def test_finite_share_by_hand():
    sd = weights(1, n=2)
    assert finite_share(make_fp(sd), "unet") == 1.0
    bad = {k: v.copy() for k, v in sd.items()}
    bad["unet:input_blocks.0.0.weight"][:, :] = np.nan            # one of two 2-D tensors: half the values
    assert finite_share(make_fp(bad), "unet") == pytest.approx(0.5)
    only_biases = {k: v for k, v in sd.items() if v.ndim == 1}
    assert finite_share(make_fp(only_biases), "unet") == 0.0        # nothing 2-D: nothing that could be aligned


# -- GGUF block grid -----------------------------------------------------------------------------------
def test_quant_step_and_comparable_blocks():
    block = np.linspace(-1.0, 3.0, 32).astype(np.float32)
    sym = quant._step(block.reshape(1, -1), "sym", 127)
    asym = quant._step(block.reshape(1, -1), "asym", 15)
    assert sym.shape == (32,) and np.allclose(sym, 3.0 / 127)        # max |a| / K
    assert np.allclose(asym, (3.0 - (-1.0)) / 15)                    # (max a - min a) / L
    assert quant.comparable("Q8_0", 64) and not quant.comparable("Q8_0", 48) and not quant.comparable("Q8_0", 0)
    assert not quant.comparable("Q4_K", 256) and not quant.comparable(None, 32)


# -- mismatch counts ------------------------------------------------------------------------------------
def test_mixed_dtype_copy_has_no_mismatch_and_a_change_is_counted():
    sd = weights(2, n=4)
    keys = sorted(sd)
    mixed = {k: (v, "F32" if i % 2 else "F16") for i, (k, v) in enumerate(sorted(sd.items()))}
    ref = make_fp(sd, "F16")
    assert match.mismatch_fraction(make_fp(mixed), ref, "unet") == (0.0, 1.0)
    k = keys[1]                                     # a F32 tensor: every sampled value moved
    changed = dict(mixed)
    changed[k] = (sd[k] + 0.5, "F32")
    n = make_fp(sd).view("unet", 0).counts
    total = int(n.sum())
    mm, cov = match.mismatch_fraction(make_fp(changed), ref, "unet")
    assert (mm, cov) == (pytest.approx(int(n[1]) / total), 1.0)


def test_a_reference_with_one_more_tensor_is_compared_key_by_key():
    sd = weights(3, n=4)
    extra = {**sd, "unet:input_blocks.00.0.weight": np.ones((64, 64))}    # sorts before every other key
    assert match.mismatch_fraction(make_fp(sd), make_fp(extra), "unet") == (0.0, 1.0)
    assert match.mismatch_fraction(make_fp(extra), make_fp(sd), "unet")[0] == 0.0


def test_the_early_count_is_a_lower_bound_from_the_first_values():
    """With a limit, the first MISMATCH_PREFIX values are counted first. Every other element of
    every tensor moved (every sampled run has an even length): half of any run differs, so the
    first values give MISMATCH_PREFIX / 2 differing, far above the limit, and that comes back."""
    sd = weights(4, n=12)
    fp = make_fp(sd)
    total = int(fp.view("unet", 0).counts.sum())
    assert total > MISMATCH_PREFIX and all(int(c) % 2 == 0 for c in fp.view("unet", 0).counts)
    changed = {}
    for k, v in sd.items():
        w = v.copy().reshape(-1)
        w[::2] += 1.0
        changed[k] = w.reshape(v.shape)
    lower, cov = match.mismatch_fraction(make_fp(changed), fp, "unet", limit=0.001)
    assert (lower, cov) == (pytest.approx(MISMATCH_PREFIX / 2 / total), 1.0)
    assert match.mismatch_fraction(make_fp(changed), fp, "unet")[0] == pytest.approx(0.5)


# -- analyse: candidates, wording -----------------------------------------------------------------------
@pytest.fixture(scope="module")
def family():
    base = {}
    for i, g in enumerate(("input_blocks", "middle_block", "output_blocks")):
        base.update(weights(10 + i, n=8, prefix=f"unet:{g}"))
    sh = shared_direction(base)
    a = finetune(base, 0.3, 11, sh)
    b = finetune(base, 0.3, 12, sh)
    return {"Base": base, "A": a, "B": b, "A1": finetune(a, 0.1, 21, sh), "shared": sh}


TREE = Tree({"Base": None, "A": "Base", "B": "Base", "A1": "A"})


def _refs(family, names=("Base", "A", "B", "A1")):
    return [Ref(n, make_fp(family[n])) for n in names]


def test_a_reference_covering_too_little_is_a_candidate_left_out_of_the_alignment(family):
    few = {k: v for k, v in family["B"].items() if k.startswith("unet:middle_block")}    # a third of the file
    refs = _refs(family, ("Base", "A")) + [Ref("Few", make_fp(few))]
    v = match.analyse(make_fp(family["A"]), "unet", refs, TREE)
    c = {x.ref: x for x in v.candidates}["Few"]
    assert (c.score, c.cos, c.z, c.distance, c.related) == (0.0, 0.0, 0.0, math.inf, False)
    assert c.mismatch == pytest.approx(1.0, abs=0.01) and c.coverage == pytest.approx(1 / 3, abs=0.01)
    assert (v.relation, v.ref) == ("same_weights", "A")
    for x in v.candidates:                          # the score is 1 - distance, never below 0
        assert x.score == max(0.0, 1.0 - x.distance)


def test_same_weights_reason_says_the_share_of_equal_values(family):
    sd = {k: v.copy() for k, v in family["A"].items()}
    sd["unet:input_blocks.0.0.weight"][-1, -3:] += 0.5              # 3 sampled values differ
    fp = make_fp(sd)
    n = int(fp.view("unet").counts.sum())
    v = match.analyse(fp, "unet", _refs(family), TREE)
    assert v.relation == "same_weights"
    assert v.reason == (f"{(1 - 3 / n) * 100:.2f}% of {n} sampled values equal A's after rounding to the coarser "
                        "precision")


def test_merge_weights_and_confidence_are_rounded_and_follow_the_residual(family):
    m = {k: 0.35 * family["A"][k] + 0.65 * family["B"][k] for k in family["A"]}
    m = finetune(m, 0.03, 31, family["shared"])          # trained a little after merging: a residual is left
    v = match.analyse(make_fp(m), "unet", _refs(family), TREE)
    assert v.relation == "merge" and all(w == round(w, 3) for _, w in v.merge)
    ratio = float(re.search(r"merge leaves ([0-9.]+)% of the difference", v.reason).group(1)) / 100
    assert 0.01 < ratio < match.MERGE_MAX_RATIO
    assert v.confidence == pytest.approx(1 - ratio, abs=0.002) and v.confidence < match.MERGE_CONF_MAX


def test_a_strongly_block_weighted_merge_is_found(family):
    """All of A's input blocks and all of B's output blocks: no single recipe fits (the global
    fit leaves much), the per-block fits leave nothing."""
    ws = {"input_blocks": 1.0, "middle_block": 0.5, "output_blocks": 0.0}
    m = {k: ws[k.split(":")[1].split(".")[0]] * family["A"][k] + (1 - ws[k.split(":")[1].split(".")[0]])
         * family["B"][k] for k in family["A"]}
    v = match.analyse(make_fp(m), "unet", _refs(family), TREE)
    assert (v.relation, v.code) == ("merge", Code.BLOCK_MERGE)
    got = {g: dict(r) for g, r in v.merge_blocks.items()}
    assert got["input"] == pytest.approx({"A": 1.0}, abs=0.02) and got["output"] == pytest.approx({"B": 1.0}, abs=0.02)
    al = match.align(make_fp(m), [make_fp(family["A"]), make_fp(family["B"])], "unet")
    fits = match.block_fits(al, [0, 1])
    assert fits["input"][1] == 8 * 128                   # the group's aligned values: 8 weights, 128 each
    assert fits["input"][2] == pytest.approx([1.0, 0.0], abs=0.02)
    assert fits["output"][2] == pytest.approx([0.0, 1.0], abs=0.02)


def test_a_dare_merge_without_a_tree_is_no_training_merge(family):
    out = dare_average(family)
    v = match.analyse(make_fp(out), "unet", _refs(family), None)
    assert v.code != Code.DELTA_MERGE
    v = match.analyse(make_fp(out), "unet", _refs(family), TREE)
    assert v.code in (Code.DELTA_MERGE, Code.MERGE)
    assert sum(w for _, w in v.merge) == pytest.approx(1.0, abs=0.005)
    if v.code == Code.DELTA_MERGE:
        shares = v.reason.split("(")[1].split(")")[0]
        assert re.fullmatch(r"([A-Za-z0-9]+ \d\.\d\d)(, [A-Za-z0-9]+ \d\.\d\d)*", shares)
        assert all(float(s.split()[1]) > 0 for s in shares.split(", "))


def test_a_far_descendant_of_a_child_is_placed_without_a_far_note(family):
    """Far from A1 (a registered child of A): A1's parent is registered, so it is no orphan and
    the "far from a parentless base" doubt does not apply."""
    f = finetune(family["A1"], 0.6, 41, family["shared"])
    v = match.analyse(make_fp(f), "unet", _refs(family), TREE)
    assert (v.relation, v.ref) == ("derivative", "A1") and v.code != Code.FAR_FROM_BASE
    assert "far from" not in v.reason


def test_descent_reason_lists_its_doubts(family):
    m = {k: 0.5 * family["A"][k] + 0.5 * family["B"][k] for k in family["A"]}
    v = match.analyse(make_fp(m), "unet", _refs(family), TREE, allow_merge=False)
    assert re.fullmatch(r"descends from Base \(distance \d\.\d{3}, cos \d\.\d{3}\); it may descend from (A|B) "
                        r"\(share \d\.\d\d\), but .*", v.reason), v.reason
    assert v.confidence == Confidence.AMBIGUOUS


def test_alignment_noise_is_finite_when_a_tensor_is_left_out():
    sd = weights(5, n=4)
    other = {k: v for k, v in sd.items() if k != "unet:input_blocks.3.0.weight"}
    al = match.align(make_fp(sd), [make_fp(other)], "unet")
    assert al.n == 3 * 128 and np.all(np.isfinite(al.NS)) and al.moments.noise_x > 0
    assert np.all(al.moments.noise_R > 0)


def test_two_related_references_are_enough_for_a_merge(family):
    m = {k: 0.5 * family["A"][k] + 0.5 * family["B"][k] for k in family["A"]}
    v = match.analyse(make_fp(m), "unet", _refs(family, ("A", "B")), TREE)
    assert v.relation == "merge" and dict(v.merge) == pytest.approx({"A": 0.5, "B": 0.5}, abs=0.01)


def test_a_partial_descent_step_is_less_than_clear(family):
    """70 % of A1's own training on top of A (a merge of A and A1, placed as a descent where merges
    are not allowed): past SHARE_MIN, not by the full margin, so the step's confidence lies between
    UNPLACED and CLEAR."""
    x = {k: family["A"][k] + 0.7 * (family["A1"][k] - family["A"][k]) for k in family["A"]}
    v = match.analyse(make_fp(x), "unet", _refs(family), TREE, allow_merge=False)
    assert (v.relation, v.ref) == ("derivative", "A1")
    assert Confidence.UNPLACED < v.confidence < Confidence.CLEAR


def test_evidence_of_a_component_verdict(family):
    fp = make_fp(family["A"])
    v = match.analyse(fp, "unet", _refs(family), TREE)
    n = sum(x.size for x in family["A"].values())
    assert v.evidence.params == n and v.evidence.share == pytest.approx(1.0)
    assert v.evidence.component_share == pytest.approx(1.0) and v.evidence.tensors == len(family["A"])


def test_one_shared_tensor_is_enough_to_align():
    sd = {"unet:input_blocks.0.0.weight": np.random.default_rng(1).normal(0, 1, (64, 64))}
    al = match.align(make_fp(sd), [make_fp(sd)], "unet")
    assert al is not None and al.n == 128 and al.keys == list(sd)


def test_a_view_of_a_view_keeps_its_rows(family):
    al = match.align(make_fp(family["A1"]), [make_fp(family[n]) for n in ("Base", "A", "B")], "unet")
    sub = al.cols([1, 2]).cols([0])                   # A alone
    assert np.array_equal(sub.ref_row(0), al.ref_row(1)) and np.array_equal(sub.file_row(), al.file_row())
    assert np.allclose(sub.moments.G, al.cols([1]).moments.G)


def test_rounding_noise_of_a_fp32_file_against_fp16_references(family):
    al = match.align(make_fp(family["A"], "F32"), [make_fp(family["A"], "F16"), make_fp(family["B"], "F16")], "unet")
    m = al.moments
    assert m.noise_x < 1e-4 * m.noise_R.min() and np.all(m.noise_R > 0)


def test_a_constant_reference_has_no_cosine(family):
    const = {k: np.full(v.shape, 0.01) for k, v in family["A"].items()}
    v = match.analyse(make_fp(family["A"]), "unet", [Ref("Flat", make_fp(const))], TREE)
    c = v.candidates[0]
    assert (c.ref, c.cos, c.z, c.related) == ("Flat", 0.0, 0.0, False) and v.relation == "unknown"


def test_a_few_mismatches_past_the_first_values_are_counted_exactly(family):
    """Under the limit the early count does not stop: 3 values differ, one of them late."""
    sd = {k: v.copy() for k, v in family["A"].items()}
    keys = sorted(k for k in sd if sd[k].ndim == 2)
    for k in (keys[0], keys[-1]):
        sd[k][-1, -1] += 0.5
    sd[keys[0]][-1, -2] += 0.5
    fp, ref = make_fp(sd), make_fp(family["A"])
    total = int(ref.view("unet", 0).counts.sum())
    assert match.mismatch_fraction(fp, ref, "unet", limit=0.001) == (pytest.approx(3 / total), 1.0)


def test_an_unscaled_file_against_a_scaled_fp8_reference(family):
    """ComfyUI's scaled fp8 on the reference's side only: the file's fp16 values are not scaled."""
    out = {}
    for k, w in family["A"].items():
        if w.ndim == 2:
            s = float(np.max(np.abs(w))) / 448.0
            out[k] = (w / s, "F8_E4M3")
            out[k[:-len("weight")] + "scale_weight"] = (np.array([s]), "F32")
        else:
            out[k] = (w, "F16")
    mm, cov = match.mismatch_fraction(make_fp(family["A"], "F16"), make_fp(out), "unet")
    assert mm == 0.0 and cov == 1.0
