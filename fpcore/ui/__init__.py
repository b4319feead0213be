"""The "Identify base model" UI, one builder for A1111 (gradio 3.41), Forge (gradio 4.40) and
``python -m fpcore ui``.

This module never imports gradio: :func:`build_ui` receives it as an argument, and uses only
what both gradio versions share (Blocks, Tab, Row, Button, Dropdown, Textbox, Dataframe,
JSON, Markdown, Accordion, ``gr.update``, ``.click``, ``gr.Progress``). gradio itself is
imported only by the standalone ``fpcore ui`` command (fpcore.cli.commands), lazily.

What differs between hosts is behind a *host* object (described in fpcore.ui.actions). The
handlers (``identify_current``, ``identify_named``, ``scan``, ``add_reference``…) are plain
functions returning plain data in fpcore.ui.actions, their text in fpcore.ui.format, so they
are tested without gradio; their names are re-exported here, where the ComfyUI/A1111 glue and
the tests find them.
"""
from __future__ import annotations

import logging
import os
import time

from .. import api, exposure  # noqa: F401  (ui.api: the façade the handlers call)
from .actions import (StandaloneHost, _setting, _url_options, add_reference, check_scan, identify_current,  # noqa: F401
                      identify_hashed, identify_named, identify_path, identify_url, import_pack, known_choices,
                      lora_dirs, loras_for, loras_for_path, policy_of, pull_known, reference_names, report_picture,
                      run_with_progress, scan)
from .format import (LORA_HEADERS, TABLE_HEADERS, format_report, legend_markdown, lora_rows,  # noqa: F401
                     scan_summary, table_rows)

log = logging.getLogger(__name__)

TAB_TITLE = "Identify base model"
TAB_ID = "model_fingerprint"


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
            with gr.Accordion("Which LoRAs fit this checkpoint", open=False):
                btn_loras = gr.Button("Check the LoRAs folder", elem_id="mfp_loras")
                lora_status = gr.Markdown(elem_id="mfp_lora_status")
                lora_table = gr.Dataframe(headers=LORA_HEADERS, datatype=["str"] * len(LORA_HEADERS),
                                          interactive=False, elem_id="mfp_lora_table")
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

        # the shown file's path comes from the ref_path box: gradio 4 takes a dict holding "path" in a
        # gr.JSON input for an uploaded file and refuses it ("not in the upload folder")
        def do_hash(path, progress=gr.Progress()):
            out = run_with_progress(lambda cb: identify_hashed(host, {"path": path}, progress=cb),
                                    _byte_progress(progress, "hashing"))
            return _identify_out(out)

        def do_loras(path, progress=gr.Progress()):
            def on_prog(done, total, p):
                progress((done, total), desc=f"read {os.path.basename(p)}", unit="files")
            try:
                res = run_with_progress(lambda cb: loras_for_path(host, path, progress=cb), on_prog)
            except Exception as e:  # an unexpected engine failure: show it, keep the UI alive
                log.exception("LoRA check failed")
                return f"**Error**: {type(e).__name__}: {e}", [[""] * len(LORA_HEADERS)]
            dirs = lora_dirs(host)
            return res["message"], lora_rows(res["rows"], dirs[0] if len(dirs) == 1 else None) or \
                [[""] * len(LORA_HEADERS)]

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
                return f"**Refused**: {e}", [[""] * len(TABLE_HEADERS)]
            if not folder_ or not os.path.isdir(folder_):
                return f"**Error**: not a folder: `{folder_}`", [[""] * len(TABLE_HEADERS)]
            t0 = time.monotonic()
            progress(0.0, desc="finding models")

            def on_prog(done, total, path):
                progress((done, total), desc=f"identified {os.path.basename(path)}", unit="files")
            try:
                res = run_with_progress(lambda cb: scan(host, folder_, write_tags=write_tags, progress=cb), on_prog)
            except Exception as e:  # an unexpected engine failure: show it, keep the UI alive
                log.exception("scan failed")
                return f"**Error**: {type(e).__name__}: {e}", [[""] * len(TABLE_HEADERS)]
            rows = table_rows(res, folder_) or [["(no model files found)"] + [""] * (len(TABLE_HEADERS) - 1)]
            return scan_summary(res, write_tags) + f"\n\n({time.monotonic() - t0:.1f} s)", rows

        def do_scan(folder_, progress=gr.Progress()):
            return _scan(folder_, False, progress)

        def do_scan_tags(folder_, progress=gr.Progress()):
            return _scan(folder_, True, progress)

        btn_current.click(do_current, inputs=[], outputs=[picture_html, summary, report, ref_path])
        btn_identify.click(do_named, inputs=[ckpt, models_dir], outputs=[picture_html, summary, report, ref_path])
        btn_refresh.click(do_refresh, inputs=[models_dir], outputs=[ckpt])
        btn_url.click(do_url, inputs=[url_box], outputs=[picture_html, summary, report, ref_path])
        btn_hash.click(do_hash, inputs=[ref_path], outputs=[picture_html, summary, report, ref_path])
        btn_loras.click(do_loras, inputs=[ref_path], outputs=[lora_status, lora_table])
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
