"""One picture per report: where a model sits among the registered references.

``svg(report, tree)`` draws, as one self-contained SVG string (no script, no external
reference, no font file):

- the registered reference tree of the file's family, compact: the lineage of the
  references that matter for this file (its base, the members of a merge, its nearest
  candidates) with the nearest siblings of that lineage; everything else is folded into
  "+N more" rows, so hundreds of references still give a picture of a few dozen rows;
- the file placed in it: a derivative hangs under its base (the edge is labelled with
  distance and confidence), same weights / identical sit on the reference itself, a merge
  has one edge per member whose width is the member's weight, an unknown stands apart
  with a dashed edge to its nearest candidate and the reason it is not related;
- for a merge, a composition bar (and one per UNet block group when the groups differ);
- a component strip (UNet/DiT, each text encoder, VAE) coloured by relation, naming the
  reference of each;
- one legend.

Colours are the Okabe-Ito palette (distinguishable with the common colour-vision
deficiencies); every colour also carries a fill pattern and every mark a text label, so
the picture reads in greyscale.

The picture is first laid out as a *scene* (a list of plain shapes); :func:`to_svg` writes
it as SVG and :func:`to_image` draws the same scene with Pillow (imported only there:
ComfyUI ships it; fpcore does not depend on it) for hosts that want pixels.

The reference tree comes in as plain data, ``{name: {"parent": name|None, "family": id}}``
(:func:`reference_tree` makes it from a RefDB or anything with ``.refs``), so this package
imports nothing else from fpcore and nothing from any host.

One job per module:

- :mod:`.style`: sizes, palette and patterns, text fitting, the legend;
- :mod:`.tree`: the report and the reference tree as plain data, folded into rows;
- :mod:`.compose`: the scene (:class:`Scene`, :func:`scene`);
- :mod:`.svgdoc`: the scene as SVG (:func:`to_svg`, :func:`svg`);
- :mod:`.raster`: the scene as pixels with Pillow (:func:`to_image`, :func:`image`).

Every name is importable from ``fpcore.picture`` as before the split.
"""
from __future__ import annotations

from .compose import Scene, scene
from .raster import FONT_DIRS, FONT_FILES, _rgb, image, to_image
from .style import (BAR_MIN_LABEL, CARD_X, CHAR_W, COMPONENT_NAMES, DENOISERS, EDGE, FONT, INDENT, INK,
                    MEMBER_STYLES, MUTED, NOT_COMPARED, PAD, RELATIONS, ROW_H, TREE_COL, WIDTH, legend)
from .svgdoc import svg, to_svg
from .tree import BLOCK_ORDER, BLOCKS_DIFFER, CANDIDATES_SHOWN, SIBLINGS_SHOWN, SMALL_TREE, reference_tree

__all__ = ["BAR_MIN_LABEL", "BLOCKS_DIFFER", "BLOCK_ORDER", "CANDIDATES_SHOWN", "CARD_X", "CHAR_W",
           "COMPONENT_NAMES", "DENOISERS", "EDGE", "FONT", "FONT_DIRS", "FONT_FILES", "INDENT", "INK",
           "MEMBER_STYLES", "MUTED", "NOT_COMPARED", "PAD", "RELATIONS", "ROW_H", "SIBLINGS_SHOWN", "SMALL_TREE",
           "Scene", "TREE_COL", "WIDTH", "image", "legend", "reference_tree", "scene", "svg", "to_image",
           "to_svg"]
