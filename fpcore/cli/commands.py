"""What the commands of the command line do (fpcore.cli holds their table, arguments and ``main``).

Each function here runs one command from the parsed arguments and returns its exit code. It
calls the engine only through :mod:`fpcore.api` (the façade the ComfyUI nodes, the A1111/Forge
tab and the standalone UI use too), imported inside the function, so ``fpcore --help`` or a
cached ``identify`` loads only what it needs. Text output goes through fpcore.cli.output.
"""
from __future__ import annotations

import os
import sys

from .output import out
from ..errors import FpError, UsageError

EXIT_BAD_INPUT = 3
EXIT_NOTHING_FOUND = 4
EXIT_INTERRUPTED = 130
EXIT_PIPE_CLOSED = 141


def _remote(args):
    """Options for URL sources from ``--header`` (a local user: no exposure checks); None when no
    PATH is a URL (the URL machinery, requests included, is then never imported)."""
    from .. import api
    paths = getattr(args, "paths", None) or ([args.path] if getattr(args, "path", None) else None)
    if paths is not None and not any(api.is_url(p) for p in paths):
        return None
    return api.remote_options(getattr(args, "header", None) or None)


def _print_json(obj) -> None:
    import json
    out(json.dumps(obj, indent=2, default=str, ensure_ascii=False))


def _per_path(args, one, text) -> int:
    """Run ``one(path)`` for each PATH; a bad one is one line on stderr and exit code 3 at the end."""
    from . import output as o
    from ..identify import error_report
    reports, bad = [], False
    for path in args.paths:
        try:
            rep = one(path)
        except FpError as e:   # the api raises (strict=True) so that --debug can show the traceback
            if args.debug:
                raise
            rep = error_report(path, e)
        if rep.get("error"):
            o.err(f"fpcore: {rep['error']}")
            bad = True
        elif not args.json:
            text(rep)
        reports.append(rep)
    if args.json:
        _print_json(reports)
    return EXIT_BAD_INPUT if bad else 0


def _identify(args) -> int:
    from .. import api
    from . import output as o
    db = api.refdb(args.refs)
    store = api._store(args.cache, not args.no_cache)
    remote = _remote(args)

    def one(path):
        cb, bar = (None, None) if args.no_hash or api.is_url(path) else o.byte_bar(f"reading {os.path.basename(path)[-30:]}")
        try:
            return api.identify_file(path, db=db, store=store, use_cache=not args.no_cache,
                                     hash_policy=_hash_policy(args), progress=cb,
                                     strict=True, remote=remote)
        finally:
            if bar is not None:
                bar.close()
    try:
        return _per_path(args, one, o.identify_text)
    finally:
        if store is not None:
            store.close()


def _hash_policy(args) -> str:
    return "always" if getattr(args, "hash", False) else "never" if getattr(args, "no_hash", False) else "auto"


def _inspect(args) -> int:
    from .. import api
    from . import output as o
    remote = _remote(args)
    return _per_path(args, lambda path: api.inspect_file(path, why=args.why, strict=True, remote=remote),
                     o.inspect_text)


def _hash(args) -> int:
    from .. import api
    from . import output as o
    store = api._store(args.cache, not args.no_cache)
    remote = _remote(args)

    def one(path):
        cb, bar = (None, None) if api.is_url(path) and not args.download else \
            o.byte_bar(f"hashing {os.path.basename(path)[-30:]}")
        try:
            return api.hash_file(path, store=store, use_cache=not args.no_cache, progress=cb, strict=True,
                                 remote=remote, download=args.download)
        finally:
            if bar is not None:
                bar.close()
    try:
        return _per_path(args, one, o.hash_text)
    finally:
        if store is not None:
            store.close()


def _scan(args) -> int:
    from .. import api
    from . import output as o
    db = api.refdb(args.refs)
    bars = o.Phases()
    try:
        res = api.scan_folder(args.dir, db=db, cache_dir=args.cache, use_cache=not args.no_cache,
                              progress=bars.file, byte_progress=bars.bytes, phase=bars.phase,
                              write_tags=args.write_tags, dry_run=args.dry_run, hash_policy=_hash_policy(args))
        if args.report and res["reports"]:
            bars.phase("report", 0, 1)
            api.write_report(res, args.report, db=db)
    finally:
        bars.close()
    return _scan_result(args, res, args.dir)


def _scan_result(args, res: dict, root: str) -> int:
    from .. import api
    from . import output as o
    from ..facts import MODEL_EXTS
    bad = o.scan_errors(res)
    summary = api.scan_summary(res)
    if args.json:
        _print_json(api.scan_json(res))
    else:
        o.scan_text(res, root, dry_run=getattr(args, "dry_run", False))
    if not res["reports"]:
        o.err(f"fpcore: {root}: no model files found (looked for {', '.join(MODEL_EXTS)} files and diffusers "
              "folders, in subfolders too)" + ("; nothing written to " + args.report if args.report else ""))
        return EXIT_BAD_INPUT if bad else EXIT_NOTHING_FOUND
    if not args.json:
        o.out(api.summary_text(summary))
        if args.report:
            o.out(f"report: {args.report}")
    return EXIT_BAD_INPUT if bad else 0


def _demo(args) -> int:
    from .. import api
    from . import output as o, demo
    out_dir = os.path.abspath(args.dir)
    o.err(f"fpcore demo: writing generated models to {out_dir} ...")
    built = demo.build(out_dir)
    report = os.path.join(out_dir, "report.html")
    args.report = report
    bars = o.Phases()
    try:
        res = api.scan_folder(built["models"], refs_dir=built["refs"], cache_dir=built["cache"],
                              progress=bars.file, byte_progress=bars.bytes, phase=bars.phase)
        bars.phase("report", 0, 1)
        api.write_report(res, report, refs_dir=built["refs"])
    finally:
        bars.close()
    if args.json:
        _print_json(dict(api.scan_json(res), demo=built))
        return 0 if all(not r.get("error") for r in res["reports"] if r["path"] not in built["bad"]) else 1
    o.out("What was built (the references are registered in " + os.path.relpath(built["refs"]) + "):")
    for line in built["story"]:
        o.out(f"  {line}")
    o.out("")
    o.out("What fpcore found:")
    code = _scan_result(args, res, built["models"])
    o.out("")
    o.out(f"Open {os.path.relpath(report)} in a browser for the table and the family tree.")
    o.out("Your own folder: fpcore scan PATH/TO/MODELS --report report.html")
    return 0 if code in (0, EXIT_BAD_INPUT) else code   # the demo's bad file is there on purpose


def _cache(args) -> int:
    from .. import api
    res = api.cache(args.action, args.cache)
    if args.json:
        _print_json(res)
    else:
        for k, v in res.items():
            out(f"{k}: {v}")
    return 0


#: gradio major versions the UI is tested with (tests/test_ui_browser.py): A1111 ships 3.41, Forge 4.40
GRADIO_TESTED = (3, 4)


def _ui(args) -> int:
    import importlib
    import logging
    import socket
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    port = args.port or 7860
    with socket.socket(socket.AF_INET6 if ":" in args.host else socket.AF_INET) as s:
        try:
            s.bind((args.host, port))
        except OSError as e:
            if args.port:
                raise UsageError(f"cannot listen on {args.host}:{port}: {e.strerror or e}; "
                                 "choose another with --port N") from None
    try:  # lazily, and not as an import statement: fpcore itself imports no host module
        gr = importlib.import_module("gradio")
    except ImportError:
        raise UsageError('the UI needs gradio: pip install "gradio>=3.41,<5"') from None
    import re
    m = re.match(r"\d+", str(getattr(gr, "__version__", "")))
    major = int(m.group()) if m else 0
    if major not in GRADIO_TESTED and not os.environ.get("FPCORE_UI_ANY_GRADIO"):
        raise UsageError(f"gradio {gr.__version__} is not supported; the UI works with gradio 3.41 and 4.x "
                         '(pip install "gradio>=4.40,<5"), or set FPCORE_UI_ANY_GRADIO=1 to try anyway')
    from .. import ui
    logging.getLogger("fpcore").setLevel(logging.INFO)
    try:
        ui.launch(gr, host=args.host, port=args.port, share=args.share == "always",
                  models_dir=args.models_dir, refs_dir=args.refs, cache_dir=args.cache)
    except OSError as e:
        raise UsageError(f"cannot serve the UI on {args.host}:{args.port or 'default port'}: {e}") from None
    return 0


def _refs_add(args) -> int:
    import logging
    from .. import api
    from . import output as o
    db = api.refdb(args.refs)
    if args.parent and args.parent not in db.refs:
        logging.getLogger("fpcore").warning("parent %r is not a registered reference", args.parent)
    url = api.is_url(args.path)
    cb, bar = (None, None) if args.no_hash or url else o.byte_bar(f"hashing {os.path.basename(args.path)[-30:]}")
    try:
        r = api.add_reference(args.path, args.name, parent=args.parent, note=args.note, hashes=not args.no_hash,
                              progress=cb, db=db, remote=_remote(args))
    finally:
        if bar is not None:
            bar.close()
    out(f"added reference {r['name']!r} ({r['family']}, {r['tensors']} tensors) -> {r['path']}")
    if not args.parent:
        o.err("note: no --parent given, so it is treated as a model trained from scratch. If it is a "
              "fine-tune, `refs remove` it and add it again with --parent NAME (the parent need not be registered): a "
              "model that only shares its ancestry is then not called its derivative.")
    return 0


def _refs_pull(args) -> int:
    """refs pull URL --name NAME [--parent P] | refs pull --known NAME...|all"""
    from .. import api
    from . import output as o
    if args.known:
        if args.url or args.name:
            raise UsageError("refs pull takes either URL --name NAME, or --known NAME... (not both)")
        rows = api.pull_known(args.known, refs_dir=args.refs, remote=_remote(args))
        if args.json:
            _print_json(rows)
        for r in rows:
            if r["status"] == "error":
                o.err(f"fpcore: {r['error']}")
            elif not args.json:
                how = ("verified by the hub's SHA-256" if r["verified"] else "not verified: the hub published no "
                       "SHA-256") if r["status"] == "added" else "already registered"
                got = (f", {r['bytes_transferred'] / 1e6:.1f} MB in {r['requests']} requests"
                       if r.get("bytes_transferred") else "")
                par = f", parent {r['parent']}" if r.get("parent") else ""
                out(f"{r['status']:8s} {r['name']} ({how}{got}{par})")
        return EXIT_BAD_INPUT if any(r["status"] == "error" for r in rows) else 0
    if not args.url or not args.name:
        raise UsageError("refs pull needs URL --name NAME (or --known NAME...|all; see refs catalog)")
    args.path, args.note, args.no_hash = args.url, args.note, False
    return _refs_add(args)


def _refs_catalog(args) -> int:
    from .. import api
    from ..facts import format_bytes
    rows = api.reference_catalog()
    if args.json:
        _print_json(rows)
        return 0
    for r in rows:
        if not r["pullable"] and not args.all:
            continue
        where = f"{r['repo']}/{r['path']}" if r["path"] else (r["repo"] or "(where: unknown)")
        size = format_bytes(r["size"]) if r["size"] else "?"
        out(f"{(r['alias'] or '-'):18s} {r['name'][:44]:44s} {size:>9s}  {where}")
    n = sum(1 for r in rows if r["pullable"])
    out(f"{n} pullable: fpcore refs pull --known ALIAS... (or all); {len(rows)} known releases "
          "(--all lists those without a known hub file too)")
    return 0


def _refs_list(args) -> int:
    from .. import api
    rows = api.list_references(args.refs)
    if args.json:
        _print_json(rows)
    elif not rows:
        out(f"no references yet (user dir: {api.reference_dir(args.refs)}); "
              "add one with: fpcore refs add MODEL --name NAME")
    else:
        for r in rows:
            par = f"  parent: {r['parent']}" + (" (not registered)" if r["orphan"] else "") if r["parent"] else ""
            out(f"{r['name']:32s} {r['family'] or '?':12s} {r['dtype'] or '':8s} {r['origin']:8s}{par}")
    return 0


def _refs_remove(args) -> int:
    from .. import api
    r = api.remove_reference(args.name, args.refs)
    out(f"removed reference {r['name']!r}")
    return 0


def _refs_export(args) -> int:
    from .. import api
    from . import output as o
    res = api.export_references(args.pack, args.names, refs_dir=args.refs)
    if args.json:
        _print_json(res)
    else:
        n = len(res["references"])
        out(f"exported {n} reference{'s' if n != 1 else ''} -> {res['path']}")
        if res["parents_not_included"]:
            o.err("note: parents not in the pack (importers get these references as orphans unless they have "
                  "them): " + ", ".join(res["parents_not_included"]))
    return 0


def _ask_clash(name: str) -> str:
    """On a terminal: what to do with a pack reference whose name is taken."""
    while True:
        sys.stderr.write(f"a reference named {name!r} already exists: [r]ename, [s]kip, [a]bort? ")
        sys.stderr.flush()
        ans = sys.stdin.readline()
        if not ans:
            return "abort"
        a = ans.strip().lower()[:1]
        if a in ("r", "s", "a"):
            return {"r": "rename", "s": "skip", "a": "abort"}[a]


def _refs_import(args) -> int:
    from .. import api
    policy = "rename" if args.rename else "skip" if args.skip else ("ask" if sys.stdin.isatty() else "error")
    res = api.import_references(args.pack, on_clash=policy, ask=_ask_clash if policy == "ask" else None,
                                refs_dir=args.refs)
    if args.json:
        _print_json(res)
    else:
        out(f"imported {len(res['added'])} reference(s) from {res['path']} into {api.reference_dir(args.refs)}")
        for old, new in res["renamed"].items():
            out(f"  {old!r} renamed to {new!r}")
        if res["skipped"]:
            out(f"  skipped (name taken): {', '.join(res['skipped'])}")
        if res["unchanged"]:
            out(f"  already registered: {len(res['unchanged'])}")
    return 0
