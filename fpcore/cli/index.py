"""``fpcore index LISTING --out PACK``: the command's arguments and what it prints (the job itself
is fpcore.indexer, reached through fpcore.api). Dask is imported only when the job runs."""
from __future__ import annotations

import sys
import time

from .output import err, out

#: seconds between two progress lines when stderr is not a terminal (a log file gets a line
#: every so often, a terminal one line rewritten in place)
LOG_EVERY = 10.0


def index_args(p) -> None:
    p.add_argument("listing", metavar="LISTING",
                   help="text file, one model a line: SOURCE [NAME [PARENT]] separated by tabs; SOURCE a URL "
                        "(https://..., hf://OWNER/REPO/FILE[@REV]) or a local path; # starts a comment")
    p.add_argument("--out", required=True, metavar="PACK",
                   help="the reference pack to write (refs import reads it); the outcome table PACK-stem.outcomes.csv "
                        "and the journal PACK-stem.journal.sqlite go beside it")
    p.add_argument("--workers", type=int, metavar="N", help="worker processes of the local cluster (default: cores)")
    p.add_argument("--scheduler", metavar="ADDRESS",
                   help="run on the Dask cluster whose scheduler is at ADDRESS (tcp://host:8786; default: "
                        "$DASK_SCHEDULER_ADDRESS, else a local cluster)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run: skip the entries already done")
    p.add_argument("--files-per-worker", type=int, metavar="N", help="files each local worker reads at once (default 8)")
    p.add_argument("--in-flight", type=int, metavar="N",
                   help="HTTP requests in flight at once per worker, all its files together (default 32)")


class _Line:
    """The one-line progress on stderr: rewritten in place on a terminal, every LOG_EVERY s otherwise."""

    def __init__(self):
        self.tty = sys.stderr.isatty()
        self.last = 0.0
        self.text = self.shown = ""

    def __call__(self, prog) -> None:
        self.text = f"index: {prog.line()}"
        if self.tty:
            sys.stderr.write("\r" + self.text.ljust(len(self.shown)))
            sys.stderr.flush()
            self.shown = self.text
        elif time.monotonic() - self.last >= LOG_EVERY:
            err(self.text)
            self.last, self.shown = time.monotonic(), self.text

    def finish(self) -> None:
        if self.tty and self.shown:
            sys.stderr.write("\n")
        elif self.text and self.text != self.shown:
            err(self.text)
        self.shown = ""


def run_index(args) -> int:
    from .. import api
    from ..errors import UsageError
    for flag in ("workers", "files_per_worker", "in_flight"):
        v = getattr(args, flag)
        if v is not None and v < 1:
            raise UsageError(f"--{flag.replace('_', '-')} must be at least 1")
    line = _Line()

    def started(engine):
        where = ("a local cluster of " + f"{engine.workers()} workers" if engine.local
                 else f"the cluster at {engine.address} ({engine.workers()} workers)")
        dash = f", dashboard {engine.dashboard}" if engine.dashboard else ""
        err(f"index: running on {engine.name}, {where}{dash}")

    opts = {k: getattr(args, k) for k in ("files_per_worker", "in_flight") if getattr(args, k) is not None}
    try:
        res = api.index_listing(args.listing, args.out, workers=args.workers, scheduler=args.scheduler,
                                resume=args.resume, progress=line, on_start=started, **opts)
    except KeyboardInterrupt:
        line.finish()
        from ..indexer.journal import paths_for
        err(f"index: interrupted; the results so far are kept in {paths_for(args.out)[0]}: run the same command "
            "with --resume to continue")
        raise
    line.finish()
    if args.json:
        import json
        out(json.dumps(res, indent=2))
    else:
        if len(res["packs"]) > 1:
            out(f"wrote {res['references']} reference(s) -> {len(res['packs'])} packs (one pack holds at most "
                "what refs import accepts; import them in this order): " + ", ".join(res["packs"]))
        elif res["pack"]:
            out(f"wrote {res['references']} reference(s) -> {res['pack']}")
        else:
            out("no entry could be fingerprinted: no pack written")
        out(f"outcomes: {res['outcomes']} ({res['ok']} ok, {res['failed']} failed"
            + (f", {res['skipped']} done by an earlier run" if res["skipped"] else "") + ")")
        if res["parents_not_included"]:
            err("note: parents not in the listing (importers get these references as orphans unless they have "
                "them): " + ", ".join(res["parents_not_included"][:10])
                + (f" and {len(res['parents_not_included']) - 10} more" if len(res["parents_not_included"]) > 10 else ""))
    return 3 if res["failed"] else 0
