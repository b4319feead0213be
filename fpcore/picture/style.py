"""How the picture looks: sizes, the colour-blind-safe palette with a fill pattern per colour,
text fitted by estimate (never measured), and the one legend that explains them."""
from __future__ import annotations

# -- decision constants ------------------------------------------------------------------
WIDTH = 760                  # px; the A1111 tab, the HTML report and a ComfyUI node scale it down
PAD = 12
FONT = 12                    # px, body text
CHAR_W = 0.60                # average advance of a sans-serif glyph in em (DejaVu Sans ~0.58):
                             # labels are cut to fit by this estimate, never measured
ROW_H = 20                   # one tree row
INDENT = 18                  # one tree level
TREE_COL = 330               # tree labels end before this x; placements and edges use the right side
CARD_X = 470                 # x of the file card for a merge or an unknown
BAR_MIN_LABEL = 28           # px: narrower segments carry no text (their share is in the key)

# Okabe & Ito (2008), "Color universal design": distinguishable with protan/deutan/tritan
# vision; patterns carry the distinction in greyscale.
RELATIONS = {  # relation -> (label, colour, pattern)
    "identical": ("identical", "#009E73", "solid"),
    "same_weights": ("same weights", "#56B4E9", "dots"),
    "derivative": ("derivative", "#0072B2", "hatch"),
    "merge": ("merge", "#E69F00", "cross"),
    "unknown": ("unknown / unrelated", "#D55E00", "backhatch"),
}
NOT_COMPARED = ("not compared", "#FFFFFF", "none")
MEMBER_STYLES = [("#E69F00", "solid"), ("#56B4E9", "hatch"), ("#009E73", "dots"), ("#CC79A7", "cross"),
                 ("#F0E442", "backhatch"), ("#0072B2", "hstripe"), ("#D55E00", "solid"), ("#999999", "dots")]
INK, MUTED, EDGE = "#222222", "#6b6b6b", "#8a8a8a"
COMPONENT_NAMES = {"unet": "UNet", "dit": "DiT", "clip_l": "CLIP-L", "clip_g": "CLIP-G", "clip_h": "CLIP-H",
                   "t5": "T5", "t5xxl": "T5-XXL", "llama": "LLaMA", "umt5": "UMT5", "gemma": "Gemma",
                   "qwen": "Qwen", "vae": "VAE"}
DENOISERS = ("unet", "dit")


# -- text fitted by estimate -----------------------------------------------------------------
def _tw(s: str, size: float = FONT) -> float:
    return len(s) * size * CHAR_W


def _fit(s: str, width: float, size: float = FONT) -> str:
    """``s`` cut (with an ellipsis) so that it fits ``width`` px by the CHAR_W estimate."""
    n = int(width / (size * CHAR_W))
    return s if len(s) <= n else (s[:max(1, n - 1)] + "…" if n > 1 else "")


def _wrap(s: str, width: float, size: float = FONT, lines: int = 2) -> list[str]:
    n = max(8, int(width / (size * CHAR_W)))
    out, cur = [], ""
    for word in s.split():
        if cur and len(cur) + 1 + len(word) > n:
            out.append(cur)
            cur = word
        else:
            cur = f"{cur} {word}" if cur else word
    if cur:
        out.append(cur)
    if len(out) > lines:
        out = out[:lines]
        out[-1] = _fit(out[-1] + " …", width, size) if len(out[-1]) + 2 <= n else out[-1][:n - 1] + "…"
    return [_fit(x, width, size) for x in out]


def _pct(w: float) -> str:
    return f"{w * 100:.0f}%"


def _member_style(i: int) -> tuple[str, str]:
    return MEMBER_STYLES[i % len(MEMBER_STYLES)]


def legend(sc, y: float) -> float:
    """Draw the legend (every relation's colour and pattern, every kind of edge) on scene ``sc``
    from ``y``; returns the y below it."""
    W = WIDTH
    y += 4
    with sc.group("mfp-legend"):
        sc.add("line", pts=[(PAD, y), (W - PAD, y)], stroke="#e0e0e0", width=1)
        y += 8
        x = PAD
        for key, (label, colour, pattern) in list(RELATIONS.items()) + [("not_compared", NOT_COMPARED)]:
            iw = 18 + _tw(label, 11) + 16
            if x + iw > W - PAD:
                x, y = PAD, y + 18
            with sc.group("mfp-legend-item", {"relation": key}):
                sc.swatch(x, y, 12, 12, colour, pattern, stroke=INK if pattern == "none" else colour, width=1)
                sc.text(x + 17, y + 10, label, size=11)
            x += iw
        y += 20
        x = PAD
        lines = [("parent", "registered parent → child", EDGE, 1.0, None),
                 ("derivative", "file → its base (distance · confidence)", RELATIONS["derivative"][1], 2.5, None),
                 ("merge", "merge member (width = weight)", RELATIONS["merge"][1], 5.0, None),
                 ("unrelated", "nearest, not related", RELATIONS["unknown"][1], 1.5, "5 4")]
        for key, label, colour, width, dash in lines:
            iw = 30 + _tw(label, 11) + 16
            if x + iw > W - PAD:
                x, y = PAD, y + 18
            with sc.group("mfp-legend-item", {"edge": key}):
                sc.add("line", pts=[(x, y + 6), (x + 24, y + 6)], stroke=colour, width=width, dash=dash)
                sc.text(x + 30, y + 10, label, size=11)
            x += iw
        y += 20
        sc.text(PAD, y + 2, "● reference on the lineage   ○ other reference   +N folded: references left out "
                "of this picture", size=11, fill=MUTED)
        y += 8
    return y
