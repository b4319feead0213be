"""The same scene in pixels, drawn with Pillow (imported here only, inside the functions:
ComfyUI ships it; fpcore does not depend on it)."""
from __future__ import annotations

import math
import os

from .compose import Scene, scene

FONT_FILES = {(False, False): ("DejaVuSans.ttf", "Verdana.ttf", "Arial.ttf"),
              (True, False): ("DejaVuSans-Bold.ttf", "Verdana Bold.ttf", "Arial Bold.ttf"),
              (False, True): ("DejaVuSans-Oblique.ttf", "DejaVuSans.ttf"),
              (True, True): ("DejaVuSans-BoldOblique.ttf", "DejaVuSans-Bold.ttf")}
FONT_DIRS = ("/usr/share/fonts/truetype/dejavu", "/usr/share/fonts/TTF", "/usr/share/fonts/dejavu",
             "/Library/Fonts", "C:/Windows/Fonts")
_fonts: dict = {}


def _font(size: float, bold: bool, italic: bool):
    from PIL import ImageFont
    key = (round(size), bold, italic)
    if key not in _fonts:
        font = None
        for name in FONT_FILES[(bold, italic)]:
            for cand in [name] + [os.path.join(d, name) for d in FONT_DIRS]:
                try:
                    font = ImageFont.truetype(cand, key[0])
                    break
                except OSError:
                    continue
            if font is not None:
                break
        if font is None:
            try:
                font = ImageFont.load_default(size=key[0])     # Pillow >= 10.1
            except TypeError:
                font = ImageFont.load_default()
        _fonts[key] = font
    return _fonts[key]


def _rgb(c: str) -> tuple[int, int, int]:
    c = c.lstrip("#")
    return tuple(int(c[i:i + 2], 16) for i in (0, 2, 4)) if len(c) == 6 else (0, 0, 0)


def _dashed(pts, dash: str):
    on, off = (float(x) for x in dash.split()[:2])
    out, draw_on, left = [], True, on
    seg = [pts[0]]
    for (x0, y0), (x1, y1) in zip(pts, pts[1:]):
        d = math.hypot(x1 - x0, y1 - y0)
        pos = 0.0
        while d - pos > left:
            pos += left
            p = (x0 + (x1 - x0) * pos / d, y0 + (y1 - y0) * pos / d)
            if draw_on:
                seg.append(p)
                out.append(seg)
            seg = [p]
            draw_on = not draw_on
            left = on if draw_on else off
        left -= d - pos
        if draw_on:
            seg.append((x1, y1))
        else:
            seg = [(x1, y1)]
    if draw_on and len(seg) > 1:
        out.append(seg)
    return out


def to_image(sc: Scene, scale: float = 2.0):
    """The same scene drawn with Pillow: an RGB ``PIL.Image`` (``scale`` px per SVG px)."""
    from PIL import Image, ImageDraw
    img = Image.new("RGB", (int(sc.width * scale), int(sc.height * scale)), "white")
    draw = ImageDraw.Draw(img)
    s = scale

    def patterned(x, y, w, h, colour, pattern):
        w, h = max(1, int(round(w * s))), max(1, int(round(h * s)))
        tile = Image.new("RGB", (w, h), _rgb(colour) if pattern != "none" else (255, 255, 255))
        if pattern not in ("solid", "none"):
            d = ImageDraw.Draw(tile)
            step, lw = 6 * s, max(1, int(1.4 * s))
            light = tuple(int(v + (255 - v) * 0.75) for v in _rgb(colour))
            if pattern == "cross":       # a dark grid: tells it from the light dots in greyscale
                light = tuple(int(v * 0.55) for v in _rgb(colour))
            if pattern in ("hatch", "backhatch"):
                k = -w - h
                while k < w + h:
                    if pattern == "hatch":
                        d.line([(k, h), (k + h, 0)], fill=light, width=lw)
                    else:
                        d.line([(k, 0), (k + h, h)], fill=light, width=lw)
                    k += step
            elif pattern in ("cross", "hstripe"):
                k = step / 2
                while k < max(w, h):
                    d.line([(0, k), (w, k)], fill=light, width=lw)
                    if pattern == "cross":
                        d.line([(k, 0), (k, h)], fill=light, width=lw)
                    k += step
            elif pattern == "dots":
                r = 1.3 * s
                for yy in range(0, h + 1, int(step) or 1):
                    for xx in range(0, w + 1, int(step) or 1):
                        cx, cy = xx + step / 2, yy + step / 2
                        d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=light)
        img.paste(tile, (int(round(x * s)), int(round(y * s))))

    def emit(items):
        for it in items:
            t = it["t"]
            if t == "g":
                emit(it["items"])
            elif t == "rect":
                x, y, w, h = it["x"], it["y"], it["w"], it["h"]
                if w <= 0 or h <= 0:
                    continue
                if it.get("fill") not in (None, "none"):
                    if it.get("rx"):
                        draw.rounded_rectangle([x * s, y * s, (x + w) * s, (y + h) * s], radius=it["rx"] * s,
                                               fill=_rgb(it["fill"]))
                    else:
                        patterned(x, y, w, h, it["fill"], it.get("pattern", "solid"))
                if it.get("stroke"):
                    lw = max(1, int(round(it.get("width", 1) * s)))
                    box = [x * s, y * s, (x + w) * s, (y + h) * s]
                    if it.get("rx"):
                        draw.rounded_rectangle(box, radius=it["rx"] * s, outline=_rgb(it["stroke"]), width=lw)
                    else:
                        draw.rectangle(box, outline=_rgb(it["stroke"]), width=lw)
            elif t == "line":
                pts = [(x * s, y * s) for x, y in it["pts"]]
                lw = max(1, int(round(it.get("width", 1) * s)))
                for part in (_dashed(pts, " ".join(str(float(v) * s) for v in it["dash"].split()))
                             if it.get("dash") else [pts]):
                    draw.line(part, fill=_rgb(it["stroke"]), width=lw, joint="curve")
            elif t == "circle":
                cx, cy, r = it["cx"] * s, it["cy"] * s, it["r"] * s
                draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=_rgb(it["fill"]), outline=_rgb(it["stroke"]),
                             width=max(1, int(round(it.get("width", 1) * s))))
            elif t == "text":
                font = _font(it["size"] * s, bool(it.get("bold")), bool(it.get("italic")))
                anchor = {"start": "ls", "middle": "ms", "end": "rs"}[it.get("anchor", "start")]
                kw = {"stroke_width": int(1.5 * s), "stroke_fill": (255, 255, 255)} if it.get("halo") else {}
                try:
                    draw.text((it["x"] * s, it["y"] * s), it["s"], fill=_rgb(it["fill"]), font=font, anchor=anchor,
                              **kw)
                except (ValueError, TypeError):    # a bitmap fallback font takes no anchor
                    draw.text((it["x"] * s, (it["y"] - it["size"]) * s), it["s"], fill=_rgb(it["fill"]), font=font)
    emit(sc.items)
    return img


def image(report: dict, tree: dict | None = None, scale: float = 2.0):
    """The picture of ``report`` as a Pillow RGB image (None for an error report)."""
    sc = scene(report, tree)
    return to_image(sc, scale) if sc is not None else None
