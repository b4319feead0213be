"""From a path to a report: inspect (header only), fingerprint, identify.

The modules follow the data flow, each importing only those before it:

- ``read``: a path, URL or open source -> the header's facts (``inspect``) and the fingerprint
  (``fingerprint_open``, ``fingerprint_path``, ``remote_identity``);
- ``wording``: the legends and words reports are written in (``RELATION_LEGEND``,
  ``components_phrase``, ``base_label``, ...);
- ``verdict``: a fingerprint -> a verdict per component and the whole file's, with its summary
  (``identify_fingerprint``);
- ``url``: a model at a URL -> a report (``identify_url``);
- ``local``: a file, folder or weights in memory -> a report, with the hashing policy (``HASH_*``)
  and the store (``identify``, ``hashes_for``, ``identify_source``, ``identify_tensors``), and
  ``add_reference``, ``error_report``.

Every name is importable from ``fpcore.identify`` itself. ``hash_file`` and ``fingerprint_path``
are looked up here at call time by ``local``: replacing ``fpcore.identify.hash_file`` (or
``fingerprint_path``) replaces the one ``identify`` and ``add_reference`` call.
"""
from __future__ import annotations

from ..errors import BadFileError, FpError
from ..facts import FAMILIES, KIND_NAMES, family_name
from ..sources.hashing import hash_file
from .local import (HASH_ALWAYS, HASH_AUTO, HASH_NEVER, HASH_POLICIES, add_reference, error_report, file_identity,
                    hashes_for, identify, identify_source, identify_tensors)
from .read import fingerprint_open, fingerprint_path, inspect, remote_identity
from .url import identify_url
from .verdict import RELATION_RANK, SAME, _summary, identify_fingerprint
from .wording import (COMPONENT_NAMES, CONFIDENCE_MEANING, EVIDENCE_LEGEND, GROUP_LEGEND, RELATION_LEGEND,
                      TEXT_ENCODERS, architecture_name, base_label, component_name, components_phrase, confidence_levels,
                      confidence_text, evidence_notes, merge_recipe, needs_reason, relation_phrase)

# display names, kind names: one table in fpcore.facts (kept importable from here)
FAMILY_NAMES = {f.id: f.name for f in FAMILIES.values()}

__all__ = [
    # a path, URL or source -> a report
    "identify", "identify_url", "identify_source", "identify_tensors", "identify_fingerprint", "inspect",
    "fingerprint_open", "fingerprint_path", "remote_identity", "hashes_for", "file_identity", "hash_file",
    "add_reference", "error_report", "HASH_AUTO", "HASH_ALWAYS", "HASH_NEVER", "HASH_POLICIES",
    # the words of reports
    "RELATION_LEGEND", "GROUP_LEGEND", "CONFIDENCE_MEANING", "EVIDENCE_LEGEND", "RELATION_RANK", "SAME",
    "TEXT_ENCODERS", "COMPONENT_NAMES", "FAMILY_NAMES", "FAMILIES", "KIND_NAMES", "family_name", "base_label",
    "component_name", "components_phrase", "confidence_levels", "confidence_text", "evidence_notes",
    "merge_recipe", "needs_reason", "relation_phrase", "architecture_name",
    # errors, and the summary sentence tests check directly
    "BadFileError", "FpError", "_summary",
]
