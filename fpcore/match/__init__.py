"""Matching a fingerprint against references: same weights, derivative, merge, unknown.

* same weights: quantize both samples to the coarser of the two dtypes and count the
  elements that differ. A precision change leaves none; a fine-tune, even a light one,
  leaves many.
* related or not: cosine of the per-tensor centred samples, with its z-score against
  independent weights (z = cos * sqrt(n)). Independent models sit at |z| of a few.
* derivative: walk the reference tree (descend.py).
* merge: non-negative least squares with weights summing to one over the related
  references, globally and per UNet block group; accepted only when it explains the
  weights far better than the best single reference (fits.py).

Every number that decides a verdict is in decisions.py, with its reason.
"""
from __future__ import annotations

from .align import Aligned, align, common, mismatch_fraction
from .analyse import Candidate, CompVerdict, analyse
from .decisions import *  # noqa: F401,F403 - the named decisions are part of the interface
from .decisions import Code, Confidence
from .evidence import Evidence, floor_file_verdict, main_component, params_of
from .fits import affine_nnls, block_fits, delta_merge, fit_merge, whole_merge

__all__ = ["Aligned", "Candidate", "Code", "CompVerdict", "Confidence", "Evidence", "affine_nnls", "align", "analyse",
           "block_fits", "common", "delta_merge", "fit_merge", "floor_file_verdict", "main_component",
           "mismatch_fraction", "params_of", "whole_merge"]
