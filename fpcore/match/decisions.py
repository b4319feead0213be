"""Every number that decides a verdict, with its reason and where it was calibrated.

"zoo" is ``python bench/zoo.py`` (65 synthetic cases with real key names: precision and
layout copies, fine-tunes of 1-35 %, baked LoRAs, merges, siblings, independent models);
"RESEARCH" is /work/shared/RESEARCH.md (real fine-tunes of all-MiniLM-L6-v2 on the CPU).
A constant marked "zoo" was set so that every zoo case is right with margin on both sides;
changing one must leave ``python bench/zoo.py`` unchanged and tests/test_match.py green.
"""
from __future__ import annotations

from dataclasses import dataclass

# -- same weights ---------------------------------------------------------------------------
#: share of compared sampled values allowed to differ after rounding both to the coarser
#: dtype. A precision copy leaves 0 (the ties of a double rounding are allowed elementwise);
#: in the zoo the lightest fine-tune (0.05 %) changes 64 % of fp16 values and a 1 % fine-tune
#: stored in fp8 16 %. 1e-3 absorbs a handful of values a converter rounded differently
#: (flush-to-zero of subnormals). Calibrated: zoo.
SAME_MAX_MISMATCH = 0.001
#: share of the file's sampled values (of the component) the reference must cover: a
#: same-weights claim rests on (nearly) everything that was sampled. Calibrated: zoo
#: ("same weights (layout)": UNet-only and prefix-less copies cover 100 %).
SAME_MIN_COVERAGE = 0.95
#: confidence of a same-weights verdict exactly at SAME_MAX_MISMATCH (1.0 with no
#: differing value, falling linearly to this): at the limit it is a coin toss with
#: "a fine-tune that barely moved".
SAME_CONF_AT_LIMIT = 0.5

# -- related or not -------------------------------------------------------------------------
#: independence z-score (z = cos * sqrt(n) of per-tensor centred samples) above which two
#: models are related. For independent weights z is ~N(0, 1): 8 sigma is beyond chance at
#: any number of comparisons. Calibrated: zoo (n ~ 10^5 sampled values: independent models
#: at |z| <= 2.1, every related file at z >= 250).
RELATED_MIN_Z = 8.0
#: ... and a floor on the cosine itself: with n in the millions a cosine of 0.01 is
#: "significant" but it is no kinship (RESEARCH: unrelated directions give ~0, sibling
#: deltas 0.06). Calibrated: zoo (independent cos <= 0.007; related >= 0.79, a DARE merge).
RELATED_MIN_COS = 0.2
#: a reference joins the joint alignment only if it covers at least this share of the
#: file's sampled values (a reference that shares few tensors would shrink every
#: other reference's comparison to those few rows).
ALIGN_MIN_COVERAGE = 0.5
#: ... and only if at least this share of its sampled 2-D values is finite: one reference
#: of NaN/Inf weights would leave no rows and make the file unrelated to all of them.
ALIGN_MIN_FINITE = 0.5

# -- merges of whole weights ----------------------------------------------------------------
#: a merge must leave at most this share of the residual the best single reference leaves
#: (beyond rounding noise). A fine-tune of one reference is explained no better by mixing
#: in a sibling; a real merge drops it to ~0. Calibrated: zoo (whole-weight merges leave
#: <= 0.3 %, a merge fine-tuned 1 % afterwards included).
MERGE_MAX_RATIO = 0.25
#: weights below this are dropped from a merge recipe and the fit is redone: a 5 % member
#: cannot be told from the sampling noise of the fit at our sample sizes. Calibrated: zoo.
MERGE_MIN_WEIGHT = 0.05
#: a merge has at least two members above MERGE_MIN_WEIGHT (else it is one model).
MERGE_MIN_MEMBERS = 2
#: a merge must leave at most this share of what the same weighted average leaves of the
#: members' common parent (fits.parent_residual: the trainings of the members cancel in their
#: average, so a parent of five fine-tunes is 1/5 from their average, inside MERGE_MAX_RATIO).
#: A merge leaves rounding noise only; half keeps merges trained a little afterwards.
#: Measured: a base among 6 and 10 of its fine-tunes was called their merge without it.
PARENT_SHARE = 0.5
#: two references are copies of the same weights (in other precisions) for a merge fit when
#: their mean squared difference is at most this many times the sum of their rounding
#: variances: copies differ by their rounding alone (a ratio near 1), the nearest fine-tunes
#: of the zoo by hundreds of times it. A fit over both copies splits the member's weight
#: between them as rounding decides, so one is kept (fits.distinct_columns).
COPY_MAX_NOISE_RATIO = 4.0
#: rounds of "fit, drop members below MERGE_MIN_WEIGHT, refit" (each round drops at least
#: one; three suffice for the 2-4 candidates a family has).
MERGE_REFITS = 3
#: confidence ceiling of a merge (1 - residual ratio): a fit is never certain.
MERGE_CONF_MAX = 0.99
#: AFFINE_ROW_WEIGHT (the row that makes merge weights sum to one) lives with the solver, in fpcore/nnls.py
#: a block-weighted merge needs per-block fits that at least halve the residual of the
#: global fit (else the global recipe explains it). Calibrated: zoo ("merge (block-weighted)"
#: against the plain merges).
BLOCK_GAIN = 0.5
#: a UNet block group (input/middle/output) takes part in the per-block fit only with at
#: least this many sampled values (two 128-value runs): fewer give an unstable recipe.
BLOCK_MIN_VALUES = 256
#: ... and a block-weighted merge needs at least this many groups fitted.
BLOCK_MIN_GROUPS = 2

# -- descent through the reference tree ---------------------------------------------------
#: largest delta cosine expected between sibling fine-tunes of one parent (weight decay
#: towards zero and shared data point every fine-tune the same way). Calibrated: RESEARCH
#: (two real MiniLM fine-tunes: 0.062) with margin.
RHO_MAX = 0.1
#: z-score added to a measured shared-direction cosine (as 3 / sqrt(n)) before it is used
#: as the bound: the measured cosine itself has sampling noise 1 / sqrt(n).
RHO_NOISE_Z = 3.0
#: share of a child's training (beyond what shared directions explain) needed to call the
#: file its descendant: halfway between a sibling (0) and the child itself (1). Calibrated:
#: zoo (shares of siblings <= 0.14, of descendants >= 0.75; an add-difference of half a
#: training 0.55, before the shared-direction bound is taken off).
SHARE_MIN = 0.5
#: excess share above SHARE_MIN at which a descent step is fully clear (confidence rises
#: linearly from Confidence.UNPLACED at SHARE_MIN to Confidence.CLEAR at SHARE_MIN + this).
SHARE_FULL_MARGIN = 0.4
#: relative distance from a parentless reference beyond which the file may descend from an
#: unregistered model of the family rather than from the reference itself. Calibrated: zoo
#: (fine-tunes of up to 15 % sit at <= 0.15; 30-35 % fine-tunes and siblings at 0.30-0.45).
FAR_REL = 0.2

# -- merges told by the references' own trainings (TIES, DARE, merged then trained) ------------
#: a reference's training share must exceed the shared-direction bound by this much to count
#: as merged in; a subtracted share beyond it marks an add-difference (a derivative).
#: Calibrated: zoo ("merge (TIES)", "merge (DARE)", "add-difference").
DELTA_MERGE_MIN = 0.1
#: one part at or above this share is one model plus noise, not a merge.
DELTA_MERGE_MAX_PART = 0.9
#: training shares adding up beyond this are one whole model plus part of another
#: (add-difference), not a merge whose shares sum to about one.
DELTA_MERGE_MAX_TOTAL = 1.5

# -- evidence floor (issue 13: a verdict rests on the bulk of the file) ------------------------
#: same weights needs the compared tensors to cover at least this share of the parameters
#: (of the component, and for the whole file those of its same-weights components): a
#: claim that the file is a copy must rest on nearly all of it. What may stay out: a swapped
#: VAE (2.4 % of SDXL; reported as differing, issue 12) and the few tensors a converter adds
#: or drops; a 22.7 M BERT whose 0.6 M pooler was the only comparable part (2.6 %) may not.
SAME_MIN_SHARE = 0.95
#: any other verdict needs the compared tensors to cover at least this share of the
#: parameters: below it the verdict would describe a sliver (a pooler, a norm layer), and
#: the result is unknown, "too little of the file is comparable". Set below the smallest
#: denoiser share of a full checkpoint (SD3 medium with T5-XXL bundled: 27 %).
EVIDENCE_MIN_SHARE = 0.2
#: components that are reported but never change the whole file's relation (issue 12: a
#: baked-in VAE swap does not make a new model); compared, they count as accepted when the
#: same-weights share of the file is weighed (the zoo's reduced-width VAE is 19 % of a file).
REPORTED_ONLY = ("vae",)

# -- pools ----------------------------------------------------------------------------------
#: a reference of another family (or of an unknown architecture) is compared only when at
#: least this share of the component's keys exist in it with the same shape; the verdict
#: still needs SAME_MIN_COVERAGE for same weights.
SAME_LAYOUT_MIN_KEYS = 0.5


# -- confidence -----------------------------------------------------------------------------
@dataclass(frozen=True)
class Level:
    value: float | None
    name: str
    meaning: str


class Confidence:
    """What a verdict's confidence means. Fixed levels name a kind of evidence; computed
    values lie between them (see LEVELS)."""

    CERTAIN = 1.0
    CLEAR = 0.9
    QUALIFIED = 0.7
    AMBIGUOUS = 0.6
    UNPLACED = 0.5
    NONE = None

    LEVELS = (
        Level(1.0, "certain", "same bytes (identical), or every compared value equal after rounding (same_weights)"),
        Level(0.9, "clear", "derivative: each step down the reference tree carries a child's training well beyond "
                            "what sibling fine-tunes share"),
        Level(0.7, "qualified", "a claim with a named doubt: far from a parentless reference (it may descend from an "
                                "unregistered model), or a merge seen only through the references' own trainings "
                                "(TIES/DARE)"),
        Level(0.6, "ambiguous", "derivative whose descent from a registered child cannot be told from being that "
                                "child's sibling"),
        Level(0.5, "unplaced", "related to a reference but not placeable in the tree; also the floor of a descent "
                               "step just past SHARE_MIN and of same_weights at SAME_MAX_MISMATCH"),
        Level(None, "none", "nothing comparable (no shared tensors, non-finite weights, no reference), or too "
                            "little of the file comparable (EVIDENCE_MIN_SHARE): no claim either way (JSON null)"),
    )
    COMPUTED = {
        "same_weights": "1 - (1 - SAME_CONF_AT_LIMIT) * mismatch / SAME_MAX_MISMATCH",
        "merge": "1 - (residual of the merge / residual of the best single reference), at most MERGE_CONF_MAX",
        "derivative": "min over the steps of UNPLACED + (CLEAR - UNPLACED) * (excess share - SHARE_MIN) / "
                      "SHARE_FULL_MARGIN, at most CLEAR",
        "unknown (not related)": "1 - cos to the closest reference (cos 0: surely unrelated)",
    }


# -- reason codes ---------------------------------------------------------------------------
class Code:
    """Why a component verdict came out as it did; summaries are chosen from these, never
    from the reason text."""

    IDENTICAL = "identical"                        # same SHA-256 (set by identify)
    SAME_WEIGHTS = "same_weights"                  # equal after rounding to the coarser dtype
    MERGE = "merge"                                # weighted average of whole references
    BLOCK_MERGE = "block_merge"                    # ... with a different recipe per UNet block group
    DELTA_MERGE = "delta_merge"                    # several references' own trainings (TIES/DARE)
    DESCENDS = "descends"                          # derivative, placed clearly
    SIBLING_AMBIGUOUS = "sibling_ambiguous"        # derivative; descent from a child not told from a sibling
    FAR_FROM_BASE = "far_from_base"                # derivative of a parentless reference, far from it
    PARENT_NOT_REGISTERED = "parent_not_registered"  # unknown: related to an orphan, too far to place
    NOT_RELATED = "not_related"                    # unknown: related to no reference
    NOTHING_COMPARABLE = "nothing_comparable"      # unknown: no shared finite weights
    NO_REFERENCE = "no_reference"                  # unknown: no reference has this component
    TOO_LITTLE_COMPARABLE = "too_little_comparable"  # unknown: the compared tensors are a sliver of the file
