"""A1111 / Forge glue for Model Fingerprint: the "Identify base model" tab, its settings, and
identify-on-load. The UI itself is fpcore.ui.build_ui (shared with ``python -m fpcore ui``);
this file only adapts the host (which checkpoint is loaded, its known SHA-256, the list).

A1111 runs every file in scripts/ as a script (never the extension's __init__.py) and puts
the extension root on sys.path only while loading it; the root is added here as well so
that fpcore stays importable from callbacks in any host version.
"""
import logging
import os
import sys
import threading

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

import gradio as gr  # noqa: E402
from modules import script_callbacks, sd_models, shared  # noqa: E402

from fpcore import api, exposure, ui  # noqa: E402

log = logging.getLogger("model_fingerprint")
if not log.handlers:  # the webui does not always configure logging: show our one-line summaries
    _h = logging.StreamHandler()
    _h.setFormatter(logging.Formatter("Model Fingerprint: %(message)s"))
    log.addHandler(_h)
    log.setLevel(logging.INFO)
    log.propagate = False

SECTION = ("model_fingerprint", "Model Fingerprint")
OPT_REFS, OPT_CACHE, OPT_ON_LOAD = ("model_fingerprint_refs_dir", "model_fingerprint_cache_dir",
                                    "model_fingerprint_identify_on_load")


def _opt(key, default=None):
    return getattr(shared.opts, "data", {}).get(key, default)


def _sha(info):
    """The SHA-256 the host already computed for a CheckpointInfo (None if it has not)."""
    sha = getattr(info, "sha256", None)
    if sha:
        return sha
    try:
        from modules import hashes
        return hashes.sha256_from_cache(info.filename, f"checkpoint/{info.name}")
    except Exception:  # an older or different host: we hash it ourselves
        return None


class WebuiHost:
    """fpcore.ui host adapter for A1111 and Forge."""

    has_current = True

    def current_checkpoint(self):
        """(path, sha256) of the loaded checkpoint; Forge before its first generation: the one it
        will load; else the checkpoint selected in the UI (or the first, which the host would load)."""
        md = getattr(sd_models, "model_data", None)
        model = getattr(md, "sd_model", None)  # the attribute, not shared.sd_model: that would load one
        info = getattr(model, "sd_checkpoint_info", None)
        if info is None and md is not None:  # Forge loads lazily
            info = (getattr(md, "forge_loading_parameters", None) or {}).get("checkpoint_info")
        if info is None:  # none loaded yet (or loading failed): what the host would load, as select_checkpoint
            title = getattr(shared.opts, "sd_model_checkpoint", None)
            if title:
                info = sd_models.checkpoint_aliases.get(title) or sd_models.get_closet_checkpoint_match(title)
            if info is None:
                info = next(iter(sd_models.checkpoints_list.values()), None)
        if info is None:
            return None
        return info.filename, _sha(info)

    def list_checkpoints(self, models_dir=None):
        return sorted(sd_models.checkpoints_list)

    def resolve(self, name, models_dir=None):
        info = sd_models.checkpoints_list.get(name) or sd_models.get_closet_checkpoint_match(name)
        return (info.filename, _sha(info)) if info is not None else None

    def models_dir(self):
        return getattr(shared.cmd_opts, "ckpt_dir", None) or sd_models.model_path

    def model_folders(self):
        """Where the host finds checkpoints: --ckpt-dir, models/Stable-diffusion (--models-dir / --data-dir);
        Forge also --forge-ref-a1111-home's models/Stable-diffusion, --vae-dir, --text-encoder-dir and
        models/VAE, models/text_encoder (modules_forge/main_entry.py refresh_models)."""
        o = shared.cmd_opts
        out = [getattr(o, "ckpt_dir", None), getattr(sd_models, "model_path", None)]
        home = getattr(o, "forge_ref_a1111_home", None)
        if home:
            out.append(os.path.join(os.fspath(home), "models", "Stable-diffusion"))
        out += [getattr(o, "vae_dir", None), getattr(o, "text_encoder_dir", None)]
        try:
            from modules import paths
            out += [os.path.join(paths.models_path, "VAE"), os.path.join(paths.models_path, "text_encoder")]
        except Exception:  # an older host without modules.paths.models_path
            pass
        return [p for p in out if isinstance(p, (str, os.PathLike)) and p]

    def lora_dirs(self):
        """Where the host keeps LoRAs: --lora-dir (models/Lora by default), A1111's LyCORIS folder."""
        o = shared.cmd_opts
        out = [getattr(o, "lora_dir", None), getattr(o, "lyco_dir_backcompat", None)]
        try:
            from modules import paths
            out.append(os.path.join(paths.models_path, "Lora"))
        except Exception:  # an older host without modules.paths.models_path
            pass
        return list(dict.fromkeys(os.fspath(p) for p in out if p))

    def exposure(self):
        """Reachable by others as A1111 decides it (cmd_opts.webui_is_non_local); writes allowed by
        --enable-insecure-extension-access, as A1111's own extension installer."""
        o = shared.cmd_opts
        exposed, why = exposure.webui_exposure(listen=getattr(o, "listen", False), share=getattr(o, "share", False),
                                               ngrok=getattr(o, "ngrok", None),
                                               server_name=getattr(o, "server_name", None))
        if not exposed:
            return exposure.LOCAL
        return exposure.make_policy(
            exposed, why, self.model_folders(),
            host_allows_writes=bool(getattr(o, "enable_insecure_extension_access", False)),
            write_setting=f"{exposure.WEBUI_INSECURE_FLAG} or {exposure.ENV_WRITES}=1")

    def refs_dir(self):
        return _opt(OPT_REFS) or None

    def cache_dir(self):
        return _opt(OPT_CACHE) or None


HOST = WebuiHost()


def _register_hash_cache():
    """Point fpcore at A1111's cache.json (SHA-256s it computed, keyed "checkpoint/<name>" with
    the file's mtime), so a scan of the checkpoint folders reads them instead of hashing again."""
    try:
        from modules import cache as webui_cache
        from fpcore.store import hostcache
        dirs = [getattr(shared.cmd_opts, "ckpt_dir", None), getattr(sd_models, "model_path", None)]
        hostcache.register(webui_cache.cache_filename, [d for d in dirs if d])
    except Exception:  # an older or different host: fpcore still finds cache.json next to models/
        log.debug("no host hash cache", exc_info=True)


_register_hash_cache()


def on_ui_tabs():
    return [(ui.build_ui(gr, host=HOST), ui.TAB_TITLE, ui.TAB_ID)]


def on_ui_settings():
    opts = [
        (OPT_REFS, "", "References folder (empty: $FPCORE_REFS or the per-user default)"),
        (OPT_CACHE, "", "Fingerprint cache folder (empty: $FPCORE_CACHE or the per-user default)"),
        (OPT_ON_LOAD, False, "Identify each checkpoint when it is loaded (in the background; summary in the console)"),
    ]
    for key, default, label in opts:
        shared.opts.add_option(key, shared.OptionInfo(default, label, section=SECTION))


def _identify_loaded(path, sha, name):
    try:
        rep = api.identify_file(path, sha256=sha, refs_dir=HOST.refs_dir(), cache_dir=HOST.cache_dir())
        log.info("%s: %s", name, api.summary_line(rep))
    except Exception:  # never disturb the host's model loading
        log.exception("identifying %s failed", path)


def on_model_loaded(sd_model):
    if not _opt(OPT_ON_LOAD, False):
        return
    info = getattr(sd_model, "sd_checkpoint_info", None)
    if info is None or not getattr(info, "filename", None):
        return
    t = threading.Thread(target=_identify_loaded, args=(info.filename, _sha(info), getattr(info, "title", info.filename)),
                         name="model-fingerprint-on-load", daemon=True)
    t.start()
    return t


script_callbacks.on_ui_tabs(on_ui_tabs)
script_callbacks.on_ui_settings(on_ui_settings)
script_callbacks.on_model_loaded(on_model_loaded)
