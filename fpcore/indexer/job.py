"""The job: a listing in, a reference pack and its outcome table out, every entry fingerprinted
on the engine (fpcore.indexer.engine).

1. The listing is parsed whole first (a bad line stops the job before any request).
2. The journal beside the pack says what is done: without ``resume`` an existing journal with
   results is refused (hours of work are not dropped by a forgotten flag); with it, the entries
   already ``ok`` are skipped and the failed ones tried again.
3. Entries are submitted to the engine a window at a time (``WINDOW_PER_SLOT`` per thread of the
   cluster: the scheduler holds a few hundred tasks, not 10^5, and Ctrl-C cancels little), each
   result recorded in the journal as it arrives. The engine re-runs a lost worker's tasks; a
   task it gives up on is tried again by the job once (``RESUBMIT``) and then listed as failed.
   A result that arrives twice is recorded once (the journal is keyed by entry).
4. When every entry has a result: the outcome table (every entry), then the pack (every ``ok``
   entry, parents first, then in listing order: the same pack whatever the order of completion).

An entry whose URL carries a credential is refused on a cluster given by address (the task would
carry the credential to the scheduler and the workers): give the workers the token in their
environment instead. On the local cluster it stays on this machine.
"""
from __future__ import annotations

import logging
import os
import time

from ..errors import BadFileError, UsageError
from ..refs.packs import MAX_MANIFEST_BYTES, MAX_REFS, MAX_TOTAL_BYTES
from .journal import Journal, paths_for
from .listing import Entry, depth_order, parse_listing

log = logging.getLogger(__name__)

#: tasks submitted per thread of the cluster at a time: enough that no thread waits for the
#: driver between two files, few enough that the scheduler's memory and a Ctrl-C stay small
WINDOW_PER_SLOT = 4
#: files each local worker reads at once (its threads). A file spends most of its time waiting
#: for round trips, so several per worker keep the link busy; with 8 full-size checkpoints at a
#: time a worker peaked at 156 MB (bench/index_speed.py --files 24 --full 24), under the 300 MB
#: a worker may take
FILES_PER_WORKER = 8
#: requests in flight at once per worker, across all its files (fpcore.sources.remote.Gate)
IN_FLIGHT = 32
#: connections one file uses for its sampled ranges (below CONNECTIONS: the worker's other files
#: use the rest of IN_FLIGHT)
CONNECTIONS_PER_FILE = 4
#: times the job submits an entry again after the engine gave up on it (its worker lost
#: repeatedly, a cancelled task) before listing it as failed
RESUBMIT = 1
#: seconds between two progress reports
PROGRESS_EVERY = 0.5
#: references and bytes of references in one pack: within what ``refs import`` accepts
#: (packs.MAX_REFS, packs.MAX_TOTAL_BYTES less room for the manifest). A full-size fingerprint is
#: ~0.4 MB, so a listing of 10^5 full-size models makes ~40 GB of references: several packs
PART_REFS = MAX_REFS
PART_BYTES = MAX_TOTAL_BYTES - MAX_MANIFEST_BYTES


class Progress:
    """Counts for the one-line progress: entries done, failed, bytes transferred, rate."""

    def __init__(self, total: int, skipped: int):
        self.total, self.skipped = total, skipped
        self.done = self.failed = self.bytes = 0
        self.t0 = time.monotonic()

    def add(self, result: dict) -> None:
        self.done += 1
        self.failed += result.get("status") != "ok"
        self.bytes += int(result.get("bytes") or 0)

    def line(self) -> str:
        dt = max(time.monotonic() - self.t0, 1e-6)
        return (f"{self.skipped + self.done}/{self.total} done, {self.failed} failed, "
                f"{self.bytes / 1e6:.1f} MB read, {self.done / dt:.1f} entries/s, {self.bytes / 1e6 / dt:.1f} MB/s")


def _task(e: Entry) -> dict:
    return {"key": e.key, "line": e.line, "source": e.source, "shown": e.shown, "name": e.name, "parent": e.parent}


def run(listing, pack, *, workers: int | None = None, scheduler: str | None = None, resume: bool = False,
        files_per_worker: int = FILES_PER_WORKER, in_flight: int = IN_FLIGHT, engine=None, progress=None,
        on_start=None) -> dict:
    """Fingerprint every entry of ``listing`` into ``pack``. ``engine``: an engine object (tests and
    the bench pass one); else a DaskEngine (a LocalCluster of ``workers`` processes, or the
    scheduler at ``scheduler``). ``progress(Progress)`` is called at most every PROGRESS_EVERY s
    and at the end; ``on_start(engine)`` once the engine is up. Returns the summary (see
    ``_summary``). Raises FpError (the listing, the journal) and KeyboardInterrupt (results so far
    are in the journal)."""
    from ..fingerprint import ALGO_VERSION
    entries = parse_listing(listing)
    jpath, cpath = paths_for(pack)
    if not os.path.isdir(os.path.dirname(os.path.abspath(pack))):
        raise BadFileError("the folder of the pack does not exist", pack)
    journal = Journal(jpath)
    try:
        if journal.count() and not resume:
            raise UsageError(f"{jpath} holds the results of an earlier run: pass --resume to continue it, or delete "
                             "it to start over")
        done = journal.done()
        todo = [e for e in entries if e.key not in done]
        prog = Progress(len(entries), len(entries) - len(todo))
        settings = {"fp_version": ALGO_VERSION, "in_flight": in_flight,
                    "connections": min(CONNECTIONS_PER_FILE, in_flight)}
        t0 = time.monotonic()
        if todo:
            own = engine is None
            if own:
                from .engine import DaskEngine
                engine = DaskEngine(scheduler, workers, threads=files_per_worker)
            try:
                if on_start:
                    on_start(engine)
                if not getattr(engine, "local", True):   # a cluster by address (--scheduler, or Dask's variable)
                    todo = _refuse_credentials(todo, journal, prog)
                _drive(engine, todo, settings, journal, prog, progress, slots=_slots(engine, files_per_worker))
            finally:
                if own:
                    engine.close()
        if progress:
            progress(prog)
        counts = journal.write_outcomes(entries, cpath)
        written = _write_packs(journal, entries, pack)
        return _summary(entries, counts, written, cpath, jpath, prog, time.monotonic() - t0)
    finally:
        journal.close()


def _refuse_credentials(todo: list[Entry], journal: Journal, prog: Progress) -> list[Entry]:
    """The entries without a credential in their URL; the others recorded as failed (the task
    would carry the credential to the scheduler and the workers, other machines)."""
    keep = []
    for e in todo:
        if not e.credential:
            keep.append(e)
            continue
        res = {"status": "error", "error": f"{e.shown}: the URL carries a credential, which would be sent to the "
               "cluster; give the workers the token in their environment (HF_TOKEN, CIVITAI_API_TOKEN) and list the "
               "URL without it"}
        journal.record(e, res)
        prog.add(res)
    return keep


def _slots(engine, files_per_worker: int) -> int:
    try:
        return max(1, engine.slots())
    except Exception:   # an engine that cannot say: a modest window
        return 2 * max(1, files_per_worker)


def _drive(engine, todo: list[Entry], settings: dict, journal: Journal, prog: Progress, progress, slots: int):
    from .task import run_entry
    queue = list(reversed(todo))
    pending: dict[object, tuple[Entry, int]] = {}
    window = max(1, slots * WINDOW_PER_SLOT)
    seq = 0
    last = 0.0
    try:
        while queue or pending:
            while queue and len(pending) < window:
                e = queue.pop()
                seq += 1
                pending[engine.submit(f"fingerprint-{e.key[:16]}-{seq}", run_entry, _task(e), settings)] = (e, 0)
            for h, res in engine.wait(list(pending), timeout=PROGRESS_EVERY):
                e, tries = pending.pop(h)
                if isinstance(res, BaseException):
                    if tries < RESUBMIT:
                        seq += 1
                        log.info("%s: %s; submitting it again", e.shown, type(res).__name__)
                        pending[engine.submit(f"fingerprint-{e.key[:16]}-{seq}", run_entry, _task(e), settings)] = \
                            (e, tries + 1)
                        continue
                    why = ("its worker was lost every time it ran (a file that crashes or exhausts the reader?)"
                           if type(res).__name__ == "Lost" else f"the engine failed it ({type(res).__name__})")
                    res = {"status": "error", "error": f"{e.shown}: {why}"}
                journal.record(e, res)
                prog.add(res)
            now = time.monotonic()
            if progress and now - last >= PROGRESS_EVERY:
                progress(prog)
                last = now
    except BaseException:
        engine.cancel(list(pending))
        raise


def part_path(pack, i: int) -> str:
    """The i-th pack of a job whose references do not fit in one (i >= 2): ``x.fprefs`` -> ``x.part2.fprefs``."""
    root, ext = os.path.splitext(os.fspath(pack))
    return f"{root}.part{i}{ext or '.fprefs'}"


def _write_packs(journal: Journal, entries: list[Entry], pack) -> list[tuple[str, list[dict]]]:
    """The pack of every ``ok`` entry, [(path, manifest entries)]; more than one (``part_path``)
    when the references exceed what one pack may hold (PART_REFS, PART_BYTES): parents first
    across the parts, so importing them in order meets every parent before its children. None
    ``ok``: no pack (an older one is left as it was)."""
    from ..refs.packs import write_pack
    from ..refs.fpref import encode_reference, read_fingerprint, read_meta

    def items():
        for e in depth_order(entries):
            blob = journal.blob(e.key)
            if blob is None:
                continue
            meta, sk = read_meta(blob)
            if meta.get("name") != e.name or meta.get("parent") != e.parent:   # renamed in the listing since
                meta.update(name=e.name, parent=e.parent)
                blob = encode_reference(meta, read_fingerprint(blob), sk)
            yield meta, blob

    it = items()
    head = [next(it, None)]
    out: list[tuple[str, list[dict]]] = []

    def part():
        n = size = 0
        while head[0] is not None and (n == 0 or (n < PART_REFS and size + len(head[0][1]) <= PART_BYTES)):
            n, size = n + 1, size + len(head[0][1])
            yield head[0]
            head[0] = next(it, None)

    while head[0] is not None:
        path = os.fspath(pack) if not out else part_path(pack, len(out) + 1)
        out.append((path, write_pack(path, part())))
    return out


def _summary(entries, counts, written, cpath, jpath, prog: Progress, seconds: float) -> dict:
    names = {e.name for e in entries}
    outside = sorted({e.parent for e in entries if e.parent and e.parent not in names})
    failed = counts.get("error", 0)
    return {"pack": written[0][0] if written else None, "packs": [p for p, _ in written],
            "outcomes": os.fspath(cpath), "journal": os.fspath(jpath),
            "entries": len(entries), "ok": counts.get("ok", 0), "failed": failed, "skipped": prog.skipped,
            "references": sum(len(w) for _, w in written), "bytes": prog.bytes, "seconds": round(seconds, 2),
            "parents_not_included": outside}
