"""The "Identify base model" UI, one builder for A1111 (gradio 3.41), Forge (gradio 4.40) and
``python -m fpcore ui``.

This module never imports gradio: :func:`build_ui` receives it as an argument, and uses only
what both gradio versions share (Blocks, Tab, Row, Button, Dropdown, Textbox, Dataframe,
JSON, Markdown, Accordion, ``gr.update``, ``.click``, ``gr.Progress``). What differs between
hosts is behind a *host* object:

- ``current_checkpoint() -> (path, sha256 or None) or None``: the checkpoint the UI has
  loaded (or selected); ``None`` when the host has no such notion (standalone);
- ``list_checkpoints(models_dir=None) -> [name]`` and ``resolve(name, models_dir=None) -> path``
  or ``(path, sha256 or None)``;
- ``models_dir() -> str``: the default folder to list and scan;
- optionally ``refs_dir()`` / ``cache_dir()``: user settings (``None``: FPCORE_REFS / FPCORE_CACHE).

The handlers (``identify_current``, ``identify_named``, ``scan``, ``add_reference``…) are plain
functions returning plain data, so they are tested without gradio.
"""
from __future__ import annotations

import logging
import os
import queue
import threading
import time

from . import api, exposure
from .identify import (CONFIDENCE_MEANING, RELATION_LEGEND, base_label, confidence_levels, confidence_text,
                       evidence_notes, needs_reason)
from .facts import MODEL_EXTS, family_name, format_bytes

log = logging.getLogger(__name__)

TAB_TITLE = "Identify base model"
TAB_ID = "model_fingerprint"
TABLE_HEADERS = ["path", "architecture", "base", "relation", "confidence"]


class StandaloneHost:
    """Host for ``python -m fpcore ui``: no loaded model; checkpoints are files under a folder."""

    has_current = False

    def __init__(self, models_dir: str | os.PathLike | None = None, refs_dir=None, cache_dir=None,
                 policy: exposure.Policy | None = None):
        self._models_dir = os.fspath(models_dir) if models_dir else os.getcwd()
        self._refs_dir, self._cache_dir = refs_dir, cache_dir
        self._policy = policy or exposure.LOCAL

    def exposure(self) -> exposure.Policy:
        return self._policy

    def current_checkpoint(self):
        return None

    def models_dir(self) -> str:
        return self._models_dir

    def list_checkpoints(self, models_dir: str | None = None) -> list[str]:
        root = models_dir or self._models_dir
        out: list[str] = []
        if not root or not os.path.isdir(root):
            return out
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames.sort()
            for f in sorted(filenames):
                if f.lower().endswith(MODEL_EXTS):
                    out.append(os.path.relpath(os.path.join(dirpath, f), root))
        return out

    def resolve(self, name: str, models_dir: str | None = None) -> str:
        if os.path.isabs(name):
            return name
        return os.path.join(models_dir or self._models_dir, name)

    def refs_dir(self):
        return self._refs_dir

    def cache_dir(self):
        return self._cache_dir


def _setting(host, name: str):
    f = getattr(host, name, None)
    v = f() if callable(f) else None
    return v or None


# ---------------------------------------------------------------- handlers (no gradio)

def format_report(rep: dict) -> str:
    """Markdown summary of one identify report."""
    if rep.get("error"):
        return f"**Error** — `{rep['path']}`: {rep['error']}" if rep.get("path") else f"**Error**: {rep['error']}"
    a, v = rep.get("architecture") or {}, rep.get("verdict") or {}
    fam = family_name(a.get("family") or "unknown") + (f" ({a['variant']})" if a.get("variant") else "")
    lines = [f"**{os.path.basename(rep.get('path') or '')}** — {api.summary_line(rep)}", "",
             f"- architecture: {fam}, {a.get('dtype') or '?'}; components: {', '.join(a.get('components') or [])}",
             f"- relation: **{v.get('relation')}**"
             + (f", **{base_label(rep)}**" if v.get("relation") == "merge" and rep.get("merge")
                else f", base **{v['base']}**" if v.get("base") else "")
             + f" (confidence {confidence_text(v.get('confidence'))})"]
    if needs_reason(v):
        lines.append(f"- why: {v['reason']}")
    if v.get("differs"):
        lines.append("- not the same weights: " + ", ".join(v["differs"]))
    if v.get("lineage"):
        lines.append(("- common ancestry: " if v.get("relation") == "merge" else "- lineage: ") + " → ".join(v["lineage"]))
    for m in rep.get("merge") or []:
        chain = f" (lineage {' → '.join(m['lineage'])})" if m.get("lineage") else ""
        lines.append(f"- merge: {m['ref']} {float(m['weight']):.2f}{chain}")
    if rep.get("sha256"):
        origin = {"host": ", from the host's cache", "published": ", as published"}.get(rep.get("hash"), "")
        lines.append(f"- sha256: `{rep['sha256']}` (AutoV2 `{(rep.get('autov2') or '').upper()}`{origin})")
    elif rep.get("path") and "://" not in rep["path"]:
        lines.append("- sha256: not computed (identified from the fingerprint; *Compute SHA-256* hashes the whole "
                     "file, for an `identical` check and the Civitai/A1111 hash)")
    lines += ["", legend_markdown(evidence_notes(v.get("reason") if needs_reason(v) else ""))]
    return "\n".join(lines)


def legend_markdown(evidence: list[str] | None = None) -> str:
    """A short legend of the relations and of confidence (and of the evidence words shown)."""
    rel = "; ".join(f"*{k}*: {m}" for k, m in RELATION_LEGEND.items())
    levels = "; ".join(f"{k}: {m}" for k, m in confidence_levels())
    text = f"<details><summary>Legend</summary>\n\n{rel}.\n\n*confidence*: {CONFIDENCE_MEANING} ({levels})"
    if evidence:
        text += "\n\n" + "; ".join(evidence) + "."
    return text + "\n\n</details>"


def report_picture(host, rep: dict) -> str:
    """The report's picture (fpcore.picture) as HTML for a gr.HTML, "" when there is none."""
    from . import picture
    from .refs import RefDB
    try:
        svg = picture.svg(rep, picture.reference_tree(RefDB(_setting(host, "refs_dir"))))
    except Exception:  # a picture must never cost the user the text answer
        log.exception("cannot draw the picture of %s", rep.get("path"))
        return ""
    return f'<div class="mfp-picture-wrap" style="background:#fff;border-radius:6px">{svg}</div>' if svg else ""


def identify_path(host, path: str, sha256: str | None = None, progress=None, hash_policy: str = "auto") -> dict:
    """Identify one file with the host's settings. ``progress(done_bytes, total_bytes)``;
    ``hash_policy``: "auto" (hash only where it decides something) or "always" (the hash button)."""
    return api.identify_file(path, sha256=sha256, progress=progress, refs_dir=_setting(host, "refs_dir"),
                             cache_dir=_setting(host, "cache_dir"), hash_policy=hash_policy)


def identify_hashed(host, rep: dict | None, progress=None) -> dict:
    """The "Compute SHA-256" button: identify the file of the shown report again, hashing it."""
    path = (rep or {}).get("path")
    if not path or "://" in path:
        return {"path": path, "error": "identify a local checkpoint first; its SHA-256 is then computed",
                "verdict": None}
    try:
        path = exposure.confine(path, policy_of(host), what="checkpoint")
    except exposure.ExposureError as e:
        return {"path": None, "error": str(e), "verdict": None, "refused": True}
    return identify_path(host, path, progress=progress, hash_policy="always")


def identify_current(host, progress=None) -> dict:
    cur = host.current_checkpoint()
    if not cur or not cur[0]:
        return {"path": None, "error": "no checkpoint is loaded or selected in the UI", "verdict": None}
    path, sha = cur
    return identify_path(host, path, sha256=sha, progress=progress)


def policy_of(host) -> exposure.Policy:
    """The host's exposure policy (``host.exposure()``); hosts without one are local."""
    f = getattr(host, "exposure", None)
    p = f() if callable(f) else None
    return p if isinstance(p, exposure.Policy) else exposure.LOCAL


def identify_named(host, name: str | None, models_dir: str | None = None, progress=None) -> dict:
    if not name:
        return {"path": None, "error": "choose a checkpoint first", "verdict": None}
    policy = policy_of(host)
    try:
        if models_dir:
            models_dir = exposure.confine(models_dir, policy, what="models folder")
        found = host.resolve(name, models_dir) if models_dir else host.resolve(name)
        if not found:
            return {"path": None, "error": f"checkpoint {name!r} not found", "verdict": None}
        path, sha = found if isinstance(found, tuple) else (found, None)
        path = exposure.confine(path, policy, what="checkpoint")
    except exposure.ExposureError as e:
        return {"path": None, "error": str(e), "verdict": None, "refused": True}
    return identify_path(host, path, sha256=sha, progress=progress)


def _url_options(policy: exposure.Policy):
    """Remote-read options for the UI. On a UI reachable by others, URLs are checked against the
    policy on the first URL and every redirect: an internal address is refused unless the server
    owner allows it. A local UI reads what its user asks for, like the command line (a NAS on
    the LAN is a normal place for models)."""
    import dataclasses
    allow = (not policy.exposed or policy.allow_private_urls
             or exposure.env_flag(exposure.ENV_PRIVATE_URLS))
    return api.remote_options(policy=dataclasses.replace(policy, allow_private_urls=allow))


def identify_url(host, url: str | None) -> dict:
    """Identify a model at a URL (https://, hf://OWNER/REPO/FILE): only its header and sampled
    ranges are read; the hash is the one the hub publishes, if any."""
    url = (url or "").strip()
    if not url:
        return {"path": None, "error": "type a URL first", "verdict": None}
    if not api.is_url(url):
        return {"path": url, "error": "not a URL (https://..., hf://OWNER/REPO/FILE)", "verdict": None}
    return api.identify_file(url, refs_dir=_setting(host, "refs_dir"), cache_dir=_setting(host, "cache_dir"),
                             remote=_url_options(policy_of(host)))


def known_choices() -> list[str]:
    """'alias: release name' for every known release that can be pulled (refs catalog)."""
    try:
        return [f"{r['alias'] or r['name']}: {r['name']}" for r in api.reference_catalog() if r["pullable"]]
    except Exception as e:   # a broken table must not break the tab
        log.warning("known releases unavailable: %s", e)
        return []


def pull_known(host, choices: list[str] | None, progress=None) -> str:
    """Pull the fingerprints of the chosen known releases (tens of MB each, not the 7 GB files)."""
    from .errors import FpError
    names = [c.split(":", 1)[0].strip() for c in (choices or []) if c]
    if not names:
        return "Tick the releases to pull first."
    policy = policy_of(host)
    try:
        exposure.check_write(policy, "adding references")
        rows = api.pull_known(names, refs_dir=_setting(host, "refs_dir"), remote=_url_options(policy),
                              progress=progress)
    except FpError as e:
        return f"**Error**: {e}"
    lines = []
    for r in rows:
        if r["status"] == "added":
            how = "verified by the hub's SHA-256" if r["verified"] else "not verified (no published SHA-256)"
            mb = (r.get("bytes_transferred") or 0) / 1e6
            lines.append(f"- added **{r['name']}** ({how}; {mb:.1f} MB read)")
        elif r["status"] == "present":
            lines.append(f"- **{r['name']}**: already registered")
        else:
            lines.append(f"- **{r['name']}**: {r['error']}")
    return "\n".join(lines)


def table_rows(result: dict, root: str | None = None) -> list[list]:
    """The results table of a scan: path (relative to root), architecture, base, relation, confidence."""
    rows = []
    for r in result.get("reports") or []:
        p = r.get("path") or ""
        rel = os.path.relpath(p, root) if root and p.startswith(os.fspath(root)) else p
        if r.get("error"):
            rows.append([rel, "error", "", r["error"], ""])
            continue
        a, v = r.get("architecture") or {}, r.get("verdict") or {}
        rows.append([rel, family_name(a.get("family") or "unknown"),
                     base_label(r) if v.get("relation") not in (None, "unknown") else "",
                     v.get("relation") or "", confidence_text(v.get("confidence")) if v else ""])
    return rows


def scan_summary(result: dict, write_tags: bool) -> str:
    reps = result.get("reports") or []
    bad = sum(1 for r in reps if r.get("error")) + len(result.get("errors") or [])
    lines = [f"Scanned **{len(reps)}** model files" + (f", {bad} with errors" if bad else "") + "."]
    for g in result.get("groups") or []:
        lines.append(f"- {g['relation']}" + (f" ({g['label']})" if g.get("label") else "") + ": "
                     + ", ".join(os.path.basename(p) for p in g["paths"])
                     + f" ({format_bytes(g.get('reclaimable_bytes', 0))} reclaimable)")
    root = result.get("root") or ""
    for s in result.get("skipped") or []:
        lines.append(f"- skipped `{os.path.relpath(s['path'], root) if root else s['path']}`: {s['reason']}")
    if write_tags:
        tags = result.get("tags") or []
        written = sum(1 for t in tags if t.get("written") or (t.get("changes") and not t.get("error")))
        errs = [t for t in tags if t.get("error")]
        lines.append(f"- tags: {written} sidecar(s) written" + (f", {len(errs)} failed" if errs else ""))
        for t in errs:
            lines.append(f"  - {t.get('path')}: {t['error']}")
    return "\n".join(lines)


def check_scan(host, folder: str, write_tags: bool = False) -> str:
    """The folder to scan, or :class:`ExposureError` (exposed UI: outside the model folders, or
    writing tags without the opt-in)."""
    policy = policy_of(host)
    folder = exposure.confine(folder, policy, what="folder")
    if write_tags:
        exposure.check_write(policy, "writing tag sidecars")
    return folder


def scan(host, folder: str, write_tags: bool = False, progress=None) -> dict:
    """``api.scan_folder`` with the host's settings; ``progress(done, total, path)``. Exposed: links
    inside the folder that lead outside the model folders are not followed; they are listed in
    ``skipped`` (neither read nor given a sidecar)."""
    folder = check_scan(host, folder, write_tags)
    policy = policy_of(host)
    return api.scan_folder(folder, refs_dir=_setting(host, "refs_dir"), cache_dir=_setting(host, "cache_dir"),
                           progress=progress, write_tags=write_tags,
                           allowed_roots=policy.roots if policy.exposed else None)


def add_reference(host, path: str, name: str, parent: str | None = None, note: str | None = None) -> str:
    from .errors import FpError
    if not path:
        return "Identify a model first (or type its path)."
    if not (name or "").strip():
        return "Give the reference a name."
    try:
        policy = policy_of(host)
        url = api.is_url(path)
        path = path if url else exposure.confine(path, policy, what="model file")
        exposure.check_write(policy, "adding a reference")
        info = api.add_reference(path, name.strip(), parent=parent or None, note=note or None,
                                 refs_dir=_setting(host, "refs_dir"), remote=_url_options(policy) if url else None)
    except FpError as e:
        return f"**Error**: {e}"
    return f"Added reference **{info.get('name', name)}**" + (f" (parent {parent})" if parent else "") + "."


def import_pack(host, pack, on_clash: str = "skip") -> str:
    """Import a reference pack (an uploaded file: a path, or gradio's file object with
    ``.name``). ``on_clash``: "skip" or "rename" for names already registered."""
    from .errors import FpError
    path = getattr(pack, "name", pack)
    if not path:
        return "Choose a reference pack (.fprefs) first."
    try:
        exposure.check_write(policy_of(host), "importing references")
        res = api.import_references(os.fspath(path), on_clash="rename" if on_clash == "rename" else "skip",
                                    refs_dir=_setting(host, "refs_dir"))
    except FpError as e:
        return f"**Error**: {str(e).replace(os.fspath(path), os.path.basename(os.fspath(path)))}"
    parts = [f"Imported **{len(res['added'])}** reference(s)."]
    if res["renamed"]:
        parts.append("Renamed: " + ", ".join(f"{a} → {b}" for a, b in res["renamed"].items()) + ".")
    if res["skipped"]:
        parts.append("Skipped (name taken): " + ", ".join(res["skipped"]) + ".")
    if res["unchanged"]:
        parts.append(f"Already registered: {len(res['unchanged'])}.")
    return " ".join(parts)


def reference_names(host) -> list[str]:
    try:
        return sorted(r["name"] for r in api.list_references(_setting(host, "refs_dir")))
    except Exception as e:  # a broken reference dir must not break the tab
        log.warning("cannot list references: %s", e)
        return []


def run_with_progress(fn, on_progress, poll: float = 0.1):
    """Run ``fn(report)`` in a worker thread; ``report(*args)`` may be called from any thread, and
    ``on_progress(*args)`` is called with the latest values on *this* thread (gradio's progress
    tracker belongs to the request's thread). Returns fn's result or raises its exception."""
    q: queue.Queue = queue.Queue()
    box: dict = {}

    def work():
        try:
            box["result"] = fn(lambda *a: q.put(a))
        except BaseException as e:  # re-raised below on the caller's thread
            box["error"] = e
    t = threading.Thread(target=work, name="fpcore-ui-job", daemon=True)
    t.start()
    while True:
        t.join(poll)
        latest = None
        try:
            while True:
                latest = q.get_nowait()
        except queue.Empty:
            pass
        if latest is not None and on_progress is not None:
            try:
                on_progress(*latest)
            except Exception:  # a UI glitch must not lose the result
                log.debug("progress update failed", exc_info=True)
        if not t.is_alive():
            break
    if "error" in box:
        raise box["error"]
    return box.get("result")


# ---------------------------------------------------------------- the gradio part

def _byte_progress(progress, label: str):
    def cb(done, total):
        progress(done / total if total else 0.0, desc=f"{label}: {done / 1e6:.0f} / {total / 1e6:.0f} MB")
    return cb


def build_ui(gr, *, host=None, refs_dir=None, cache_dir=None, theme=None, title: str = "Model Fingerprint"):
    """Build the tab as a ``gr.Blocks`` (A1111/Forge: return ``[(blocks, TAB_TITLE, TAB_ID)]`` from
    on_ui_tabs; standalone: ``.queue().launch()`` it). ``gr`` is the gradio module."""
    host = host or StandaloneHost(refs_dir=refs_dir, cache_dir=cache_dir)
    standalone = not getattr(host, "has_current", True)
    kw = {"analytics_enabled": False, "title": title}
    if theme is not None:
        kw["theme"] = theme
    with gr.Blocks(**kw) as blocks:
        gr.Markdown("Identify a Stable Diffusion checkpoint from its weights: architecture, the registered base "
                    "model, and whether it is identical, the same weights, a fine-tune or a merge.")
        with gr.Tab("Identify", elem_id="mfp_tab_identify"):
            with gr.Row():
                btn_current = gr.Button("Identify the loaded checkpoint", variant="primary",
                                        visible=not standalone, elem_id="mfp_identify_current")
            with gr.Row():
                models_dir = gr.Textbox(label="Models folder", value=host.models_dir(), visible=standalone,
                                        elem_id="mfp_models_dir")
            with gr.Row():
                ckpt = gr.Dropdown(label="Checkpoint", choices=host.list_checkpoints(), interactive=True,
                                   elem_id="mfp_checkpoint")
                btn_refresh = gr.Button("Refresh list", elem_id="mfp_refresh")
                btn_identify = gr.Button("Identify", variant="primary", elem_id="mfp_identify")
            with gr.Row():
                url_box = gr.Textbox(label="...or a URL: only the header and a small sample are read "
                                           "(https://..., hf://OWNER/REPO/FILE)", elem_id="mfp_url")
                btn_url = gr.Button("Identify URL", elem_id="mfp_identify_url")
            picture_html = gr.HTML(elem_id="mfp_picture")
            summary = gr.Markdown(elem_id="mfp_summary")
            btn_hash = gr.Button("Compute SHA-256", elem_id="mfp_compute_hash")
            with gr.Row():
                ref_path = gr.Textbox(label="Model file (for 'add as reference')", elem_id="mfp_ref_path")
                ref_name = gr.Textbox(label="Reference name", elem_id="mfp_ref_name")
                ref_parent = gr.Dropdown(label="Parent reference (optional)", choices=[""] + reference_names(host),
                                         value="", interactive=True, elem_id="mfp_ref_parent")
                btn_add = gr.Button("Add as reference", elem_id="mfp_add_ref")
            add_status = gr.Markdown(elem_id="mfp_add_status")
            with gr.Accordion("Full report (JSON)", open=False):
                report = gr.JSON(label="Report", elem_id="mfp_report")
            with gr.Accordion("Reference fingerprints of known base models (no 7 GB downloads)", open=False):
                known_box = gr.CheckboxGroup(label="Pull these (tens of MB each, checked against the published "
                                                   "SHA-256)", choices=known_choices(), elem_id="mfp_known")
                btn_pull = gr.Button("Pull selected", elem_id="mfp_pull")
                pull_status = gr.Markdown(elem_id="mfp_pull_status")
            with gr.Accordion("Import a reference pack (refs export makes one)", open=False):
                pack_file = gr.File(label="Reference pack (.fprefs)", elem_id="mfp_pack_file")
                pack_clash = gr.Radio(["skip", "rename"], value="skip", label="When a name is already registered",
                                      elem_id="mfp_pack_clash")
                btn_pack = gr.Button("Import pack", elem_id="mfp_import_pack")
                pack_status = gr.Markdown(elem_id="mfp_pack_status")

        with gr.Tab("Scan a folder", elem_id="mfp_tab_scan"):
            with gr.Row():
                folder = gr.Textbox(label="Folder", value=host.models_dir(), elem_id="mfp_folder")
            with gr.Row():
                btn_scan = gr.Button("Scan", variant="primary", elem_id="mfp_scan")
                btn_tags = gr.Button("Scan and write tags", elem_id="mfp_scan_tags")
            scan_status = gr.Markdown(elem_id="mfp_scan_status")
            table = gr.Dataframe(headers=TABLE_HEADERS, datatype=["str"] * len(TABLE_HEADERS),
                                 interactive=False, elem_id="mfp_table")

        # -- handlers: gradio needs gr.Progress() as a default argument value
        def _identify_out(rep):
            return report_picture(host, rep), format_report(rep), rep, rep.get("path") or ""

        def do_current(progress=gr.Progress()):
            rep = run_with_progress(lambda cb: identify_current(host, progress=cb),
                                    _byte_progress(progress, "reading"))
            return _identify_out(rep)

        def do_named(name, mdir, progress=gr.Progress()):
            rep = run_with_progress(lambda cb: identify_named(host, name, mdir if standalone else None, progress=cb),
                                    _byte_progress(progress, "hashing"))
            return _identify_out(rep)

        def do_url(url):
            return _identify_out(identify_url(host, url))

        def do_hash(rep, progress=gr.Progress()):
            out = run_with_progress(lambda cb: identify_hashed(host, rep, progress=cb),
                                    _byte_progress(progress, "hashing"))
            return _identify_out(out)

        def do_pull(choices, progress=gr.Progress()):
            msg = pull_known(host, choices, progress=lambda i, n, name: progress((i, n), desc=f"pulling {name}"))
            return msg, gr.update(choices=[""] + reference_names(host))

        def do_refresh(mdir):
            if standalone:
                try:
                    mdir = exposure.confine(mdir, policy_of(host), what="models folder") if mdir else mdir
                except exposure.ExposureError as e:
                    log.warning("%s", e)
                    return gr.update(choices=[])
            return gr.update(choices=host.list_checkpoints(mdir) if standalone else host.list_checkpoints())

        def do_import(pack, clash):
            return import_pack(host, pack, clash), gr.update(choices=[""] + reference_names(host))

        def do_add(path, name, parent):
            msg = add_reference(host, path, name, parent)
            return msg, gr.update(choices=[""] + reference_names(host))

        def _scan(folder_, write_tags, progress):
            try:
                folder_ = check_scan(host, folder_, write_tags) if folder_ else folder_
            except exposure.ExposureError as e:
                return f"**Refused**: {e}", [["", "", "", "", ""]]
            if not folder_ or not os.path.isdir(folder_):
                return f"**Error**: not a folder: `{folder_}`", [["", "", "", "", ""]]
            t0 = time.monotonic()
            progress(0.0, desc="finding models")

            def on_prog(done, total, path):
                progress((done, total), desc=f"identified {os.path.basename(path)}", unit="files")
            try:
                res = run_with_progress(lambda cb: scan(host, folder_, write_tags=write_tags, progress=cb), on_prog)
            except Exception as e:  # an unexpected engine failure: show it, keep the UI alive
                log.exception("scan failed")
                return f"**Error**: {type(e).__name__}: {e}", [["", "", "", "", ""]]
            rows = table_rows(res, folder_) or [["(no model files found)", "", "", "", ""]]
            return scan_summary(res, write_tags) + f"\n\n({time.monotonic() - t0:.1f} s)", rows

        def do_scan(folder_, progress=gr.Progress()):
            return _scan(folder_, False, progress)

        def do_scan_tags(folder_, progress=gr.Progress()):
            return _scan(folder_, True, progress)

        btn_current.click(do_current, inputs=[], outputs=[picture_html, summary, report, ref_path])
        btn_identify.click(do_named, inputs=[ckpt, models_dir], outputs=[picture_html, summary, report, ref_path])
        btn_refresh.click(do_refresh, inputs=[models_dir], outputs=[ckpt])
        btn_url.click(do_url, inputs=[url_box], outputs=[picture_html, summary, report, ref_path])
        btn_hash.click(do_hash, inputs=[report], outputs=[picture_html, summary, report, ref_path])
        btn_pull.click(do_pull, inputs=[known_box], outputs=[pull_status, ref_parent])
        btn_add.click(do_add, inputs=[ref_path, ref_name, ref_parent], outputs=[add_status, ref_parent])
        btn_pack.click(do_import, inputs=[pack_file, pack_clash], outputs=[pack_status, ref_parent])
        btn_scan.click(do_scan, inputs=[folder], outputs=[scan_status, table])
        btn_tags.click(do_scan_tags, inputs=[folder], outputs=[scan_status, table])
    return blocks


def local_theme(gr):
    """The default theme with system fonts: no request to a font CDN (offline machines, CI)."""
    try:
        return gr.themes.Default(font=["ui-sans-serif", "system-ui", "sans-serif"],
                                 font_mono=["ui-monospace", "Consolas", "monospace"])
    except Exception:  # very old or new gradio without themes: its default is fine
        return None


def launch(gr, *, host: str = "127.0.0.1", port: int | None = None, share: bool = False,
           models_dir=None, refs_dir=None, cache_dir=None):
    """``python -m fpcore ui``: build and serve (blocks until interrupted)."""
    exposed, why = exposure.standalone_exposure(host, share)
    root = os.fspath(models_dir) if models_dir else os.getcwd()
    policy = exposure.make_policy(exposed, why, [root]) if exposed else exposure.LOCAL
    if exposed:
        log.warning("the UI is reachable by others (%s): %s", why, policy.describe())
    h = StandaloneHost(models_dir, refs_dir=refs_dir, cache_dir=cache_dir, policy=policy)
    blocks = build_ui(gr, host=h, theme=local_theme(gr))
    blocks.queue()
    log.info("serving on http://%s:%s", host, port or 7860)
    blocks.launch(server_name=host, server_port=port, share=share, inbrowser=False)
