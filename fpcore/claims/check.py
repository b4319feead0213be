"""Each claim checked against what the weights say: ``consistent``, ``contradicts`` or
``unverifiable``, with one sentence saying why.

- base: the model a claim names against the verdict's lineage (for a merge, its members'
  lineages); a model line ("Illustrious") against the model lines of that lineage;
- family: the claimed architecture against the header's (for a LoRA, what its shapes say);
- recipe: claimed members and weights against the fitted merge, within RECIPE_TOLERANCE;
- file: the SHA-256 a sidecar records against the file's, when that is known.

A LoRA's weights cannot say which checkpoint of its family it was trained on: its claims are
checked against the checkpoint its training metadata names by SHA-256 (``trained_on``), and
otherwise only on the family.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from ..facts import KIND_NAMES, family_name
from .resolve import BRAND_INFO, Named, Resolver, same_family
from .said import Said

CONSISTENT, CONTRADICTS, UNVERIFIABLE = "consistent", "contradicts", "unverifiable"
#: strength of a check: a file's ``claim_check`` is its strongest (a contradiction is never
#: hidden behind a consistent claim)
RANK = {CONTRADICTS: 2, CONSISTENT: 1, UNVERIFIABLE: 0}
#: a claimed merge weight agrees with the fitted one within this (the issue's bound; fitted
#: weights are within 0.05 of the generator's on the 1,000-file folder, README)
RECIPE_TOLERANCE = 0.1
#: claimed members below this weight are not looked for in the fit (match.MERGE_MIN_WEIGHT:
#: a 5 % member cannot be told from the fit's noise)
MEMBER_MIN_WEIGHT = 0.05
PLACED = ("identical", "same_weights", "derivative", "merge")
#: verdict codes of an unknown that still compared the file with its family's references: it is
#: related to none of them, which a claim naming one of them contradicts
NOT_RELATED_CODES = ("not_related",)


@dataclass
class Facts:
    """What the weights say, as the checks need it."""
    family: str | None
    kind: str
    relation: str | None
    base: str | None
    lineage: list[str]
    members: dict[str, float]
    member_lineages: dict[str, list[str]]
    comparable: bool
    sha256: str | None
    trained_on: Named | None = None         # a LoRA's checkpoint, found by hash
    reason: str = ""
    names: set = field(default_factory=set)  # every registered name the weights tie the file to

    @property
    def addon(self) -> bool:
        return self.kind not in ("checkpoint", "unet_only", "dit_only")

    @property
    def placed(self) -> bool:
        return self.relation in PLACED if not self.addon else self.trained_on is not None


def facts_of(report: dict, trained_on: Named | None) -> Facts:
    a, v = report.get("architecture") or {}, report.get("verdict") or {}
    fam = report.get("weights_family") or a.get("family")
    members = {m["ref"]: float(m["weight"]) for m in report.get("merge") or [] if v.get("relation") == "merge"}
    mlin = {m["ref"]: list(m.get("lineage") or [m["ref"]]) for m in report.get("merge") or []
            if v.get("relation") == "merge"}
    kind = a.get("kind") or "checkpoint"
    main = next((e for c, e in (report.get("components") or {}).items() if c in ("unet", "dit")), None) or {}
    f = Facts(family=None if fam in (None, "unknown") else fam, kind=kind, relation=v.get("relation"),
              base=v.get("base"), lineage=list(v.get("lineage") or []), members=members, member_lineages=mlin,
              comparable=v.get("relation") == "unknown" and main.get("code") in NOT_RELATED_CODES,
              sha256=report.get("sha256"), trained_on=trained_on, reason=v.get("reason") or "")
    if f.addon:
        f.lineage = list(trained_on.lineage) if trained_on is not None else []
        f.relation = None
    f.names = set(f.lineage) | ({f.base} if f.base and not f.addon else set())
    for lin in mlin.values():
        f.names |= set(lin)
    return f


def _claim(s: Said, check: str, detail: str, refers_to: str | None = None) -> dict:
    return {"source": s.source, "says": s.says, "refers_to": refers_to, "check": check, "detail": detail,
            "key": s.key}


def _sentence(text: str) -> str:
    return text[:1].upper() + text[1:] + ("" if text.endswith(".") else ".")


def _what(f: Facts) -> str:
    """'an SDXL LoRA', 'an SD1.x checkpoint'."""
    fam = family_name(f.family) if f.family else "unknown-architecture"
    kind = KIND_NAMES.get(f.kind, "model" if f.kind in ("unet_only", "dit_only") else "checkpoint")
    text = f"{fam} {kind}"
    return ("an " if text[0].lower() in "aeiou" or text.startswith(("SD", "FLUX", "HunyuanDiT")) else "a ") + text


def _weights_say(f: Facts) -> str:
    """What the weights say, as the end of a sentence."""
    from ..identify.wording import merge_recipe
    if f.addon:
        t = f.trained_on
        return (f"its training metadata names {t.label} by SHA-256 ({' → '.join(t.lineage)})" if t and t.lineage
                else "its training checkpoint is not known")
    if f.relation == "merge":
        return "the weights are a merge: " + merge_recipe([{"ref": r, "weight": w} for r, w in f.members.items()])
    if f.relation in ("identical", "same_weights"):
        return f"the weights are {f.base}'s"
    if f.relation == "derivative":
        return f"the weights descend from {f.base} ({' → '.join(f.lineage)})"
    return "the weights are not related to any registered reference of this architecture"


def _tie(f: Facts, target: str) -> str:
    """Why ``target`` (in f.names) is what the weights say: the sentence of a consistent claim."""
    for m, lin in f.member_lineages.items():
        if target in lin:
            return f"{m} ({f.members.get(m, 0) * 100:.0f}% of this merge) descends from {target}" if m != target \
                else f"{target} is {f.members.get(m, 0) * 100:.0f}% of this merge"
    if f.addon:
        return f"its training metadata names {f.trained_on.label} by SHA-256, which descends from {target}"
    if target == f.base and f.relation in ("identical", "same_weights"):
        return f"the weights are {target}'s"
    return f"the weights descend from {target} ({' → '.join(f.lineage)})"


def check_family(s: Said, f: Facts) -> dict:
    if not s.family:
        return _claim(s, UNVERIFIABLE, f"{s.says.split(' ', 1)[-1]} is not an architecture fpcore knows.")
    if not f.family:
        return _claim(s, UNVERIFIABLE, "The header does not tell the architecture.", family_name(s.family))
    if same_family(s.family, f.family):
        return _claim(s, CONSISTENT, f"The header says so too: {_what(f)}.", family_name(s.family))
    return _claim(s, CONTRADICTS, f"Claims {family_name(s.family)}, but the header says {_what(f)}.",
                  family_name(s.family))


def _target(n: Named, f: Facts) -> str | None:
    """The registered model a named model ties the file to: itself if registered, else the
    deepest registered ancestor of the scanned file it names."""
    return n.ref or (n.anchor if n.file else None)


def check_base(s: Said, f: Facts, r: Resolver) -> dict:
    n = s.named or Named(s.says)
    label = n.label
    fam = n.family or s.family
    if fam and f.family and not same_family(fam, f.family):
        return _claim(s, CONTRADICTS, f"{label or n.text} is {family_name(fam)}, but the header says {_what(f)}.",
                      label)
    if f.addon and s.by_hash:
        if not fam:
            return _claim(s, UNVERIFIABLE, f"{label} is named by SHA-256, but its architecture is not known.", label)
        return _claim(s, CONSISTENT, f"Names {label} by SHA-256, {_what_model(fam)} as the LoRA's shapes say.",
                      label)
    if s.hashes and not (n.ref or n.known or n.file):
        return _claim(s, UNVERIFIABLE, f"SHA-256 {s.hashes[0][:10]}… is not a registered reference, a known "
                                       f"release or a scanned file.", label)
    target = _target(n, f)
    if not f.placed:
        if f.comparable and not target and n.brand and not BRAND_INFO[n.brand]["root"]:
            regs = r.refs_of_brand(n.brand, f.family)   # related to none of them either
            if regs:
                return _claim(s, CONTRADICTS, f"Claims {BRAND_INFO[n.brand]['name']}, but the weights are not "
                                              f"related to {regs[0]} (nor to any registered reference of this "
                                              f"architecture).", regs[0])
        return _unplaced(s, f, n, label, fam)
    if target:
        if target in f.names:
            return _claim(s, CONSISTENT, _sentence(_tie(f, target)), label)
        if target in r.db.refs:
            return _claim(s, CONTRADICTS, f"Claims {label}, but {_weights_say(f)}, not {target}.", label)
    if n.brand and BRAND_INFO[n.brand]["root"] and not target:
        if fam and f.family:
            return _claim(s, CONSISTENT, f"The header says so too: {_what(f)} (every "
                                         f"{family_name(f.family)} model descends from it).", label)
    if n.brand and not target:
        tied = [x for x in sorted(f.names, key=lambda x: (len(r.db.lineage(x)), x)) if r.ref_brand(x) == n.brand]
        if tied:
            return _claim(s, CONSISTENT, _sentence(_tie(f, tied[0])), tied[0])
        regs = r.refs_of_brand(n.brand, f.family)
        if regs:
            return _claim(s, CONTRADICTS, f"Claims {BRAND_INFO[n.brand]['name']}, but {_weights_say(f)}, not "
                                          f"{regs[0]}.", regs[0])
        return _claim(s, UNVERIFIABLE, f"No {BRAND_INFO[n.brand]['name']} reference is registered to compare "
                                       f"with; {_weights_say(f)}.", label)
    if n.known:
        return _claim(s, UNVERIFIABLE, f"{n.known} is a known release but not registered (fpcore refs pull "
                                       f"--known); {_weights_say(f)}.", label)
    return _claim(s, UNVERIFIABLE, f"{n.text} is not a registered reference or a model line fpcore knows.", label)


def _what_model(fam: str) -> str:
    text = f"{family_name(fam)} checkpoint"
    return ("an " if text[0].lower() in "aeiou" or text.startswith(("SD", "FLUX")) else "a ") + text


def _unplaced(s: Said, f: Facts, n: Named, label: str | None, fam: str | None) -> dict:
    """A claim about a file the weights could not place: a LoRA without a checkpoint hash, an
    unknown that was compared (related to none: a registered named model is contradicted)."""
    target = _target(n, f)
    if f.comparable and target:
        return _claim(s, CONTRADICTS, f"Claims {label}, but the weights are not related to {target} "
                                      f"(nor to any registered reference of this architecture).", label)
    if fam and f.family and n.brand and BRAND_INFO[n.brand]["root"] and not target:
        return _claim(s, CONSISTENT, f"The header says so too: {_what(f)}.", label)
    if f.addon:
        what = f"The architecture matches ({_what(f)})" if fam and f.family else "Its architecture is not said"
        return _claim(s, UNVERIFIABLE, f"{what}; which checkpoint a LoRA was trained on its weights cannot "
                                       f"tell, and its metadata names none by SHA-256.", label)
    why = f.reason or "the weights could not be placed"
    return _claim(s, UNVERIFIABLE, f"The weights could not be placed ({why}).", label)


def check_recipe(s: Said, f: Facts, r: Resolver) -> dict:
    from ..identify.wording import merge_recipe
    shown = " + ".join(m.label or m.text for m in s.members)
    targets = [_target(m, f) for m in s.members]
    if s.weights is None:       # members without weights (a workflow, sd_merge_models)
        known_t = [t for t in targets if t]
        if not known_t:
            return _claim(s, UNVERIFIABLE, f"None of {shown} is a registered reference.", None)
        missing = [t for t in known_t if t not in f.names]
        if not f.placed:
            return _unplaced(s, f, s.members[0], None, None)
        if missing:
            return _claim(s, CONTRADICTS, f"Names {', '.join(missing)}, but {_weights_say(f)}.", missing[0])
        return _claim(s, CONSISTENT, _sentence(_weights_say(f)), known_t[0])
    claimed: dict[str, float] = {}
    for m, t, w in zip(s.members, targets, s.weights):
        if w < MEMBER_MIN_WEIGHT:
            continue
        if not t:
            return _claim(s, UNVERIFIABLE, f"{m.label or m.text} is not a registered reference, so its share "
                                           f"cannot be measured.", None)
        claimed[t] = claimed.get(t, 0.0) + w
    refers = max(claimed, key=claimed.get) if claimed else None
    if f.relation == "merge":
        fitted = f.members
        worst = max(abs(claimed.get(t, 0.0) - fitted.get(t, 0.0)) for t in set(claimed) | set(fitted))
        fit_text = merge_recipe([{"ref": t, "weight": w} for t, w in fitted.items()])
        if worst <= RECIPE_TOLERANCE:
            return _claim(s, CONSISTENT, f"The weights fit {fit_text}, within {RECIPE_TOLERANCE:g} of the recipe.",
                          refers)
        return _claim(s, CONTRADICTS, f"The recipe says {merge_recipe([{'ref': t, 'weight': w} for t, w in claimed.items()])}"
                                      f"; the weights fit {fit_text}.", refers)
    if f.placed:
        if all(t in f.lineage for t in claimed):
            if abs(claimed.get(f.base, 0.0) - 1.0) <= RECIPE_TOLERANCE:
                return _claim(s, CONSISTENT, _sentence(f"{_weights_say(f)}; the other members' share is within "
                                                       f"{RECIPE_TOLERANCE:g}"), refers)
            return _claim(s, UNVERIFIABLE, f"Its members are {f.base} and its own ancestors: such a mix cannot be "
                                           f"told from a lighter fine-tune ({_weights_say(f)}).", refers)
        return _claim(s, CONTRADICTS, f"The weights are not a merge of {', '.join(claimed)}: "
                                      f"{_weights_say(f)}.", refers)
    return _unplaced(s, f, Named(shown, ref=refers), refers, None)


def check_file(s: Said, f: Facts) -> dict | None:
    if not f.sha256:
        return None          # the file's hash is not known: nothing to compare (it is not computed for this)
    if f.sha256.lower() in s.hashes:
        return _claim(s, CONSISTENT, "The file's SHA-256 is the one the sidecar records.")
    return _claim(s, CONTRADICTS, f"The sidecar records SHA-256 {s.hashes[0][:10]}…, this file's is "
                                  f"{f.sha256[:10]}…: it describes another file (an earlier version?).")


def check(s: Said, f: Facts, r: Resolver) -> dict | None:
    if s.kind == "family":
        return check_family(s, f)
    if s.kind == "recipe":
        return check_recipe(s, f, r)
    if s.kind == "file":
        return check_file(s, f)
    return check_base(s, f, r)
