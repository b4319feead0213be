"""The candidate search of the reference library: which references the full analysis of a file's
component reads (fpcore.refs.library's :class:`RefDB` has it).

A small pool is read whole; a large one through the candidate index over the catalogued sketches
(fpcore.refs.sketchindex): the index's few candidates and their ancestors. References whose
component has another layout than the file's are left out first, decided once per layout.
"""
from __future__ import annotations

import logging

from .. import layout
from ..errors import BadFileError
from ..fingerprint import Fingerprint
from .fpref import Reference

log = logging.getLogger(__name__)


def _sketchindex():
    from . import sketchindex
    return sketchindex


class CandidateSearch:
    """The candidate search over a library's references (``refs``, ``problems`` and ``_index``
    are the library's)."""

    def sketch_of(self, ref: Reference, comp: str):
        """The catalogued sketch of one reference's component (None if it has none)."""
        if ref.sketches is None:
            if ref._fp is None:
                return None
            ref.sketches = _sketchindex().index_vectors(_sketchindex().sketches_of(ref._fp))
        return ref.sketches.get(comp)

    @property
    def index(self):
        """The candidate index over the sketches (fpcore.refs.sketchindex), built on first use."""
        if self._index is None:
            from .sketchindex import RefIndex
            self._index = RefIndex.build(self)
        return self._index

    def candidates(self, fp: Fingerprint, comp: str, pool: list) -> list:
        """The references of ``pool`` worth the full analysis of ``comp``: all of a small pool,
        else the index's few candidates and their ancestors. Unreadable ones are left out."""
        from .sketchindex import select
        chosen = select(self, fp, comp, pool)
        out = []
        for r in chosen:
            try:
                r.fp
            except BadFileError as e:
                log.warning("skipping reference: %s", e)
                if str(e) not in self.problems:
                    self.problems.append(str(e))
                continue
            out.append(r)
        return out

    def layout_pool(self, fp: Fingerprint, comp: str, same_layout) -> list:
        """References whose ``comp`` has (mostly) the file's keys and shapes: ``same_layout(fp,
        ref_fp, comp)`` decided once per distinct layout, on one fingerprint of that layout."""
        groups: dict[str, list] = {}
        for r in self.refs.values():
            lay = (r.layouts or {}).get(comp)
            if lay:
                groups.setdefault(lay[0], []).append(r)
            elif r.layouts is not None and (comp == layout.WHOLE or (
                    layout.is_container_component(comp) and "other" in r.layouts)):
                # written before whole-file digests (or those of components named by their
                # container, then counted in "other") existed: decided on its own fingerprint
                groups.setdefault(f"ref:{r.name}", []).append(r)
        out = []
        for members in groups.values():
            for r in members:      # the first readable one decides for its layout
                try:
                    ok = same_layout(fp, r.fp, comp)
                except BadFileError:
                    continue
                if ok:
                    out.extend(members)
                break
        return out
