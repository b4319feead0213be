"""What the buttons of the "Identify base model" UI do, without gradio: plain functions taking a
*host* and returning plain data (tested without gradio; fpcore.ui wires them to the widgets).

What differs between hosts is behind the host object:

- ``current_checkpoint() -> (path, sha256 or None) or None``: the checkpoint the UI has
  loaded (or selected); ``None`` when the host has no such notion (standalone);
- ``list_checkpoints(models_dir=None) -> [name]`` and ``resolve(name, models_dir=None) -> path``
  or ``(path, sha256 or None)``;
- ``models_dir() -> str``: the default folder to list and scan;
- optionally ``refs_dir()`` / ``cache_dir()``: user settings (``None``: FPCORE_REFS / FPCORE_CACHE);
- optionally ``exposure()``: the exposure policy (fpcore.exposure; local when absent);
- optionally ``lora_dirs() -> [str]``: where the host keeps LoRAs (default: ``models_dir()``).
"""
from __future__ import annotations

import logging
import os
import queue
import threading

from .. import api, exposure
from ..facts import MODEL_EXTS

log = logging.getLogger("fpcore.ui")


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


def policy_of(host) -> exposure.Policy:
    """The host's exposure policy (``host.exposure()``); hosts without one are local."""
    f = getattr(host, "exposure", None)
    p = f() if callable(f) else None
    return p if isinstance(p, exposure.Policy) else exposure.LOCAL


def report_picture(host, rep: dict) -> str:
    """The report's picture (fpcore.picture) as HTML for a gr.HTML, "" when there is none."""
    from .. import picture
    from ..refs.library import RefDB
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


def lora_dirs(host) -> list[str]:
    """The folders whose LoRAs the tab checks against the loaded checkpoint."""
    f = getattr(host, "lora_dirs", None)
    dirs = f() if callable(f) else None
    return [d for d in (dirs or [host.models_dir()]) if d and os.path.isdir(d)]


def loras_for(host, rep: dict | None, progress=None) -> dict:
    """The "Which LoRAs fit" button: ``{"rows": api.loras_fitting rows, "message": markdown}`` for
    the checkpoint of the shown report. ``progress(done, total, path)``."""
    path = (rep or {}).get("path")
    if not rep or rep.get("error") or not path:
        return {"rows": [], "message": "Identify a checkpoint first."}
    if (rep.get("architecture") or {}).get("kind") not in ("checkpoint", "unet_only", "dit_only"):
        return {"rows": [], "message": "The identified file is not a checkpoint."}
    dirs = lora_dirs(host)
    loras = api.find_loras(dirs)
    if not loras:
        return {"rows": [], "message": "No model files in " + ", ".join(f"`{d}`" for d in dirs) + "."}
    rows = api.loras_fitting(rep, [p for p in loras if os.path.realpath(p) != os.path.realpath(path)],
                             refs_dir=_setting(host, "refs_dir"), cache_dir=_setting(host, "cache_dir"),
                             progress=progress)
    n = {k: sum(1 for r in rows if r["fit"] == k) for k in ("yes", "no", "unknown")}
    msg = (f"**{n['yes']}** LoRA(s) fit **{os.path.basename(path)}**, {n['no']} do not, "
           f"{n['unknown']} cannot be told" if rows else "No LoRA among the files of " + ", ".join(dirs))
    return {"rows": rows, "message": msg + "."}


def loras_for_path(host, path: str | None, progress=None) -> dict:
    """``loras_for`` the checkpoint at ``path`` (the identified file; its report comes from the
    store). A URL, or a path outside an exposed UI's model folders, is refused with a message."""
    if not path:
        return {"rows": [], "message": "Identify a checkpoint first."}
    if api.is_url(path):
        return {"rows": [], "message": "Identify a local checkpoint: LoRAs are checked against a file."}
    try:
        path = exposure.confine(path, policy_of(host), what="checkpoint")
    except exposure.ExposureError as e:
        return {"rows": [], "message": f"**Refused**: {e}"}
    return loras_for(host, identify_path(host, path), progress=progress)


def known_choices() -> list[str]:
    """'alias: release name' for every known release that can be pulled (refs catalog)."""
    try:
        return [f"{r['alias'] or r['name']}: {r['name']}" for r in api.reference_catalog() if r["pullable"]]
    except Exception as e:   # a broken table must not break the tab
        log.warning("known releases unavailable: %s", e)
        return []


def pull_known(host, choices: list[str] | None, progress=None) -> str:
    """Pull the fingerprints of the chosen known releases (tens of MB each, not the 7 GB files)."""
    from ..errors import FpError
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
    from ..errors import FpError
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
    from ..errors import FpError
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
