"""The families of a scan: files are compared with, grouped with and drawn in a tree with the
files of their family. A family is the architecture's; files no rule recognises form one family
per layout (the same keys and shapes where the denoiser, or the one component, is), named by what
is known of it ("unrecognised layout, 2.6 B parameters, UNet + 2 text encoders + VAE")."""
from __future__ import annotations

from .. import layout


def family_groups(reports: dict, fps: dict) -> dict[tuple[str, str], list[str]]:
    """(family, denoiser component) -> files with that architecture (family_of)."""
    groups: dict[tuple[str, str], list[str]] = {}
    for p, rep in reports.items():
        if p not in fps or not rep.get("architecture"):
            continue
        den = denoiser_of(rep)
        if den:
            groups.setdefault((family_of(rep), den), []).append(p)
    return groups


#: family_of() of files no rule recognises: this prefix and their layout digest
LAYOUT_FAMILY = "layout:"


def family_of(rep: dict) -> str | None:
    """The family a file is grouped with: its architecture's; for a file no rule recognises, its
    layout (the references' layout digest of its denoiser, or of its one component): files with
    the same keys and shapes there form one family, named by what is known of it."""
    a = rep.get("architecture") or {}
    lay = a.get("layout") or {}
    if a.get("family") == "unknown" and lay.get("digest"):
        return LAYOUT_FAMILY + lay["digest"]
    return a.get("family")


def family_title(family: str, reps: list[dict]) -> str:
    """How a family of family_groups is named: its id, or the layout name of a layout family."""
    if family and family.startswith(LAYOUT_FAMILY):
        return next((r["architecture"]["layout_name"] for r in reps
                     if (r.get("architecture") or {}).get("layout_name")), "unrecognised layout")
    return family


def in_family(ref, family: str, comp: str) -> bool:
    """Whether a registered reference belongs to a family of family_groups (a layout family: a
    reference of unknown family whose ``comp`` has that layout digest)."""
    if family and family.startswith(LAYOUT_FAMILY):
        lay = (getattr(ref, "layouts", None) or {}).get(comp)
        return ref.family == "unknown" and bool(lay) and lay[0] == family[len(LAYOUT_FAMILY):]
    return ref.family == family


def denoiser_of(rep: dict) -> str | None:
    """The component a file's folder relation compares (as family_groups chooses it)."""
    comps = (rep.get("architecture") or {}).get("components") or []
    return next((c for c in comps if c in layout.DENOISERS), comps[0] if comps else None)
