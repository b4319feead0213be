"""Command line: ``python -m fpcore identify|inspect|hash|refs ...`` (see CONTRACT.md)."""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys

from . import __version__
from .errors import FpError, UsageError

log = logging.getLogger("fpcore")


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # usage errors exit 2 with one line
        self.print_usage(sys.stderr)
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        sys.exit(2)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="fpcore", description="Identify Stable Diffusion checkpoints by their weights.")
    p.add_argument("--version", action="version", version=f"fpcore {__version__}")
    p.add_argument("--debug", action="store_true", help="show tracebacks and debug logging")
    sub = p.add_subparsers(dest="cmd", required=True, parser_class=_Parser)

    s = sub.add_parser("identify", help="what is this model: architecture, base, relation")
    s.add_argument("paths", nargs="+", metavar="PATH")
    s.add_argument("--json", action="store_true", help="print the JSON report (CONTRACT.md)")
    s.add_argument("--refs", metavar="DIR", help="user reference dir (default: $FPCORE_REFS)")
    s.add_argument("--no-hash", action="store_true", help="skip the SHA-256 of the whole file")
    s.add_argument("--no-cache", action="store_true", help="do not read or write the fingerprint store")

    s = sub.add_parser("inspect", help="architecture, components, dtypes and metadata from the header only")
    s.add_argument("paths", nargs="+", metavar="PATH")
    s.add_argument("--json", action="store_true")
    s.add_argument("--why", action="store_true", help="show the matching rule and why the others were rejected")

    s = sub.add_parser("hash", help="SHA-256, AutoV2 and AutoV3 of files")
    s.add_argument("paths", nargs="+", metavar="PATH")
    s.add_argument("--json", action="store_true")
    s.add_argument("--no-cache", action="store_true", help="always hash, never use the store")

    s = sub.add_parser("scan", help="identify every model under a folder; duplicates, merges, family tree")
    s.add_argument("dir", metavar="DIR")
    s.add_argument("--json", action="store_true", help="print {reports, groups} (CONTRACT.md)")
    s.add_argument("--write-tags", action="store_true", help="write the <model>.json tag sidecars")
    s.add_argument("--dry-run", action="store_true", help="with --write-tags: show what would change, write nothing")
    s.add_argument("--report", metavar="FILE.html", help="write a self-contained HTML report")
    s.add_argument("--refs", metavar="DIR")
    s.add_argument("--no-cache", action="store_true")

    c = sub.add_parser("cache", help="the shared fingerprint store ($FPCORE_CACHE)")
    c.add_argument("action", choices=["info", "prune", "clear"])
    c.add_argument("--json", action="store_true")

    u = sub.add_parser("ui", help="the 'Identify base model' web UI, standalone (needs gradio)")
    u.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    u.add_argument("--port", type=int, default=None, help="port (default: gradio's, 7860 or the next free)")
    u.add_argument("--share", choices=["never", "always"], default="never",
                   help="gradio share link (default never: the UI stays on this machine)")
    u.add_argument("--models-dir", metavar="DIR", help="folder whose checkpoints the dropdown lists and scans")
    u.add_argument("--refs", metavar="DIR")

    r = sub.add_parser("refs", help="manage reference models")
    rs = r.add_subparsers(dest="refcmd", required=True, parser_class=_Parser)
    a = rs.add_parser("add", help="fingerprint a model and register it as a reference")
    a.add_argument("path", metavar="PATH")
    a.add_argument("--name", required=True)
    a.add_argument("--parent", help="name of the reference this model was trained or merged from")
    a.add_argument("--note")
    a.add_argument("--no-hash", action="store_true", help="do not hash the file (no 'identical' matches)")
    a.add_argument("--refs", metavar="DIR")
    ls = rs.add_parser("list", help="list references")
    ls.add_argument("--json", action="store_true")
    ls.add_argument("--refs", metavar="DIR")
    rm = rs.add_parser("remove", help="remove a user reference")
    rm.add_argument("name")
    rm.add_argument("--refs", metavar="DIR")
    return p


def _progress_bar(path: str):
    """A tqdm bar for hashing on a terminal, else nothing."""
    if not sys.stderr.isatty():
        return None, None
    try:
        from tqdm import tqdm
    except ImportError:
        return None, None
    bar = tqdm(total=0, unit="B", unit_scale=True, unit_divisor=1024, desc=f"hash {path[-30:]}", leave=False)

    def cb(done, total):
        bar.total = total
        bar.n = done
        bar.refresh()
    return cb, bar


def _emit_text_identify(rep: dict) -> None:
    if rep.get("error"):
        print(f"{rep['path']}: error: {rep['error']}")
        return
    a, v = rep["architecture"], rep["verdict"]
    fam = a["family"] + (f" ({a['variant']})" if a.get("variant") else "")
    print(f"{rep['path']}")
    kind = f", {a['kind']}" if a.get("kind") not in (None, "checkpoint") else ""
    print(f"  architecture: {fam}{kind}, {a.get('dtype')}, components: {', '.join(a['components']) or '-'}"
          + (f", prediction: {a['prediction']}" if a.get("prediction") else ""))
    if rep.get("sha256"):
        print(f"  sha256: {rep['sha256']}  (AutoV2 {rep['autov2'].upper()}"
              + (f", AutoV3 {rep['autov3'].upper()})" if rep.get("autov3") else ")"))
    print(f"  verdict: {v['relation']}" + (f" — base {v['base']}" if v.get("base") else "")
          + f"  (confidence {v['confidence']:.2f})")
    print(f"  {v['summary']}")
    for m in rep.get("merge") or []:
        print(f"    merge: {m['ref']} {m['weight']:.2f}")
    for g, ws in (rep.get("merge_blocks") or {}).items():
        print(f"    {g} blocks: " + ", ".join(f"{m['ref']} {m['weight']:.2f}" for m in ws))
    for c, e in rep["components"].items():
        print(f"  {c:7s} {e['relation']}" + (f" {e['ref']}" if e.get("ref") else ""))
    if v["relation"] == "unknown" and rep.get("candidates"):
        c = rep["candidates"][0]
        print(f"  closest reference: {c['ref']} (cosine {c['cos']:.3f}, z {c['z']:.0f}; related models score far higher)")
    if rep.get("metadata"):
        from .provenance import summary
        s = summary(rep["metadata"])
        if s:
            print(f"  provenance: {s}")


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.WARNING,
                        format="%(levelname)s: %(message)s", stream=sys.stderr)
    try:
        return _run(args)
    except FpError as e:
        if args.debug:
            raise
        print(f"fpcore: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("fpcore: interrupted", file=sys.stderr)
        return 130


def _run(args) -> int:
    from . import identify as ident
    from .refs import RefDB

    if args.cmd in ("identify", "inspect", "hash"):
        from .store import Store
        reports, bad = [], False
        db = RefDB(args.refs) if args.cmd == "identify" else None
        store = None if getattr(args, "no_cache", False) or args.cmd == "inspect" else Store()
        for path in args.paths:
            try:
                if args.cmd == "identify":
                    cb, bar = (None, None) if args.no_hash or args.json and not sys.stderr.isatty() else _progress_bar(path)
                    try:
                        rep = ident.identify(path, db, hashes=not args.no_hash, progress=cb, store=store)
                    finally:
                        if bar is not None:
                            bar.close()
                elif args.cmd == "inspect":
                    rep = ident.inspect(path, why=args.why)
                else:
                    cb, bar = _progress_bar(path)
                    try:
                        rep = {"path": path, **ident.hashes_for(path, store=store, progress=cb), "error": None}
                    finally:
                        if bar is not None:
                            bar.close()
            except FpError as e:
                if args.debug:
                    raise
                print(f"fpcore: {e}", file=sys.stderr)
                rep, bad = ident.error_report(path, e), True
            reports.append(rep)
            if not args.json:
                _emit_text(args, rep)
        if args.json:
            print(json.dumps(reports, indent=2, default=str))
        return 3 if bad else 0

    if args.cmd == "scan":
        return _scan_cmd(args)

    if args.cmd == "ui":
        os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
        import importlib
        try:  # lazily, and not as an import statement: fpcore itself imports no host module
            gr = importlib.import_module("gradio")
        except ImportError:
            raise UsageError("the UI needs gradio: pip install gradio") from None
        from . import ui
        logging.getLogger("fpcore").setLevel(logging.INFO)
        ui.launch(gr, host=args.host, port=args.port, share=args.share == "always",
                  models_dir=args.models_dir, refs_dir=args.refs)
        return 0

    if args.cmd == "cache":
        from .store import Store
        store = Store()
        if args.action == "prune":
            out = store.prune()
        elif args.action == "clear":
            store.clear()
            out = {"cleared": store.enabled}
        else:
            out = store.info()
        if args.json:
            print(json.dumps(out, indent=2))
        else:
            for k, v in out.items():
                print(f"{k}: {v}")
        return 0

    if args.cmd == "refs":
        db = RefDB(args.refs)
        if args.refcmd == "list":
            rows = [dict(r.info(), children=db.children(r.name), orphan=db.orphan(r.name))
                    for r in db.refs.values()]
            if args.json:
                print(json.dumps(rows, indent=2))
            elif not rows:
                print(f"no references yet (user dir: {db.user_dir}); add one with: fpcore refs add MODEL --name NAME")
            else:
                for r in rows:
                    par = f"  parent: {r['parent']}" + (" (not registered)" if r["orphan"] else "") if r["parent"] else ""
                    print(f"{r['name']:32s} {r['family'] or '?':12s} {r['dtype'] or '':8s} {r['origin']:8s}{par}")
            return 0
        if args.refcmd == "remove":
            r = db.remove(args.name)
            print(f"removed reference {r.name!r}")
            return 0
        if args.refcmd == "add":
            if args.parent and args.parent not in db.refs:
                log.warning("parent %r is not a registered reference", args.parent)
            cb, bar = (None, None) if args.no_hash else _progress_bar(args.path)
            try:
                r = ident.add_reference(db, args.path, args.name, parent=args.parent, note=args.note,
                                        hashes=not args.no_hash, progress=cb)
            finally:
                if bar is not None:
                    bar.close()
            print(f"added reference {r.name!r} ({r.family}, {len(r.fp.keys)} tensors) -> {r.path}")
            if not args.parent:
                print("note: no --parent given, so it is treated as a model trained from scratch. If it is a "
                      "fine-tune, `refs remove` it and add it again with --parent NAME (the parent need not be registered): a "
                      "model that only shares its ancestry is then not called its derivative.", file=sys.stderr)
            return 0
    raise UsageError(f"unknown command {args.cmd}")


def _emit_text(args, rep: dict) -> None:
    if args.cmd == "identify":
        _emit_text_identify(rep)
    elif rep.get("error"):
        print(f"{rep['path']}: error: {rep['error']}")
    elif args.cmd == "inspect":
        a = rep["architecture"]
        print(f"{rep['path']}: {a['family']}" + (f" ({a['variant']})" if a.get("variant") else "")
              + f", {a['kind']}, {a.get('dtype')}, {rep['tensors']} tensors, components: {', '.join(a['components'])}")
        for n in a.get("notes") or []:
            print(f"  note: {n}")
        if "rules" in rep:
            print(f"  matched rule: {rep['rules']['matched']}")
            for r in rep["rules"]["rejected"]:
                print(f"  rejected {r['rule']}: {r['why']}")
    else:
        print(f"{rep['sha256']}  AutoV2 {rep['autov2'].upper()}"
              + (f"  AutoV3 {rep['autov3'].upper()}" if rep.get("autov3") else "") + f"  {rep['path']}")


def _scan_cmd(args) -> int:
    from . import report_html, scan
    from .refs import RefDB
    db = RefDB(args.refs)
    bar = None
    if sys.stderr.isatty():
        try:
            from tqdm import tqdm
            bar = tqdm(total=0, unit="B", unit_scale=True, unit_divisor=1024, desc="scan", smoothing=0.1)
        except ImportError:
            bar = None

    def byte_cb(done, total):
        if bar is not None:
            bar.total = total
            bar.n = done
            bar.refresh()

    def file_cb(done, total, path):
        if bar is not None:
            bar.set_postfix_str(f"{done}/{total} files")
    try:
        res = scan.scan_folder(args.dir, db=db, use_cache=not args.no_cache, progress=file_cb, byte_progress=byte_cb,
                               write_tags=args.write_tags, dry_run=args.dry_run)
    finally:
        if bar is not None:
            bar.close()
    if args.report:
        from .paths import atomic_write
        atomic_write(args.report, report_html.render(res, db).encode("utf-8"))
    bad = (any(r.get("error") for r in res["reports"]) or bool(res["errors"])
           or any(t.get("error") for t in res["tags"]))
    for e in res["errors"]:
        print(f"fpcore: {e['error']}", file=sys.stderr)
    for r in res["reports"]:
        if r.get("error"):
            print(f"fpcore: {r['error']}", file=sys.stderr)
    for t in res["tags"]:
        if t.get("error"):
            print(f"fpcore: {t['error']}", file=sys.stderr)
    if args.json:
        print(json.dumps(scan.public(res), indent=2, default=str))
        return 3 if bad else 0
    for r in res["reports"]:
        if r.get("error"):
            continue
        v, a, f = r["verdict"], r["architecture"], r.get("folder") or {}
        peer = f" | folder: {f['relation']} {os.path.relpath(f['peer'], args.dir)}" if f.get("peer") else ""
        print(f"{os.path.relpath(r['path'], args.dir)}: {a['family']} | {v['relation']}"
              + (f" {v['base']}" if v.get("base") else "") + peer)
    for g in res["groups"]:
        print(f"{g['relation']} group ({g['reclaimable_bytes'] / 1e6:.1f} MB reclaimable): "
              + ", ".join(os.path.relpath(p, args.dir) for p in g["paths"]))
    for t in res["tags"]:
        if not t.get("error") and t["changes"]:
            verb = "would set" if args.dry_run else "set"
            print(f"{t['path']}: {verb} " + ", ".join(f"{k}={v[1]!r}" for k, v in t["changes"].items()))
    if args.report:
        print(f"report: {args.report}")
    return 3 if bad else 0
