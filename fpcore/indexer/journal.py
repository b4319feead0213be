"""The job's per-entry results, kept as they arrive, and the outcome table written from them.

The journal is one SQLite file beside the pack (``<pack stem>.journal.sqlite``): a row per
entry, committed as soon as the entry's result reaches the driver (write-ahead log), so a crash
or Ctrl-C loses at most the entries in flight, and ``--resume`` skips every entry already ``ok``.
Rows are keyed by a hash of the SOURCE (never the SOURCE: it may carry a credential) and hold
the .fpref bytes of each fingerprinted entry, so the pack is written from the journal alone.
SQLite is in the standard library and writes one row at a time atomically; a folder of one file
per entry would hold 10^5 files.

The outcome table is CSV (``<pack stem>.outcomes.csv``), one row per listing entry in listing
order: it opens in any spreadsheet and with ``grep``/``awk``, needs no dependency (Parquet would
need pyarrow, ~100 MB), and at 10^5 rows is ~20 MB, read in a second.
"""
from __future__ import annotations

import csv
import os
import sqlite3
import time
from pathlib import Path

from ..errors import BadFileError

#: the outcome table's columns, in order (docs/json-format.md)
COLUMNS = ("line", "name", "parent", "source", "status", "error", "sha256", "sha256_from", "family", "size",
           "bytes", "requests", "seconds", "worker")
#: bump when the journal's table changes; a journal of another version is refused (start over)
JOURNAL_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS results (
    key TEXT PRIMARY KEY, line INTEGER, name TEXT, parent TEXT, source TEXT, status TEXT, error TEXT,
    sha256 TEXT, sha256_from TEXT, family TEXT, size INTEGER, bytes INTEGER, requests INTEGER,
    seconds REAL, worker TEXT, at TEXT, blob BLOB);
CREATE TABLE IF NOT EXISTS info (k TEXT PRIMARY KEY, v TEXT);
"""


def paths_for(pack: str | os.PathLike) -> tuple[Path, Path]:
    """(journal, outcome table) beside ``pack``: ``x.fprefs`` -> ``x.journal.sqlite``, ``x.outcomes.csv``."""
    p = Path(pack)
    stem = p.name[:-len(p.suffix)] if p.suffix else p.name
    return p.with_name(stem + ".journal.sqlite"), p.with_name(stem + ".outcomes.csv")


class Journal:
    """The per-entry results of one job (see the module doc)."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        try:
            self.db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")   # a process crash loses nothing committed
            self.db.executescript(_SCHEMA)
            v = self.db.execute("SELECT v FROM info WHERE k='version'").fetchone()
            if v is None:
                self.db.execute("INSERT INTO info VALUES ('version', ?)", (str(JOURNAL_VERSION),))
            elif v[0] != str(JOURNAL_VERSION):
                raise BadFileError(f"a journal of another fpcore version ({v[0]}); delete it to start over", self.path)
        except sqlite3.Error as e:
            raise BadFileError(f"cannot use the job's journal ({e}); delete it to start over", self.path) from None

    def close(self) -> None:
        self.db.close()

    def count(self) -> int:
        return self.db.execute("SELECT COUNT(*) FROM results").fetchone()[0]

    def done(self) -> set[str]:
        """Keys of the entries already fingerprinted."""
        return {k for (k,) in self.db.execute("SELECT key FROM results WHERE status='ok'")}

    def clear(self) -> None:
        self.db.execute("DELETE FROM results")

    def record(self, entry, result: dict) -> None:
        """Store one entry's result (replacing an earlier one of the same entry: a retried failure,
        or a task the engine ran twice after losing a worker)."""
        row = (entry.key, entry.line, entry.name, entry.parent, entry.shown, result["status"], result.get("error"),
               result.get("sha256"), result.get("sha256_from"), result.get("family"), result.get("size"),
               result.get("bytes"), result.get("requests"), result.get("seconds"), result.get("worker"),
               time.strftime("%Y-%m-%dT%H:%M:%S"), result.get("blob"))
        try:
            self.db.execute("INSERT OR REPLACE INTO results VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)", row)
        except sqlite3.Error as e:
            raise BadFileError(f"cannot record a result ({e}); the run can be resumed with --resume", self.path) \
                from None

    def outcome(self, key: str) -> dict | None:
        cur = self.db.execute(f"SELECT {', '.join(COLUMNS)} FROM results WHERE key=?", (key,))
        row = cur.fetchone()
        return dict(zip(COLUMNS, row)) if row else None

    def blob(self, key: str) -> bytes | None:
        row = self.db.execute("SELECT blob FROM results WHERE key=? AND status='ok'", (key,)).fetchone()
        return bytes(row[0]) if row and row[0] is not None else None

    def write_outcomes(self, entries, path: str | os.PathLike) -> dict:
        """The outcome table, one row per entry in listing order (``pending`` for an entry without
        a result). Returns the counts per status."""
        from ..paths import atomic_write
        counts: dict[str, int] = {}

        def write(f):
            import io
            text = io.TextIOWrapper(f, encoding="utf-8", newline="")
            w = csv.writer(text)
            w.writerow(COLUMNS)
            for e in entries:
                o = self.outcome(e.key) or {"status": "pending"}
                o.update(line=e.line, name=e.name, parent=e.parent, source=e.shown)
                counts[o["status"]] = counts.get(o["status"], 0) + 1
                w.writerow(["" if o.get(c) is None else o[c] for c in COLUMNS])
            text.flush()
            text.detach()
        try:
            atomic_write(path, write)
        except OSError as e:
            raise BadFileError(f"cannot write the outcome table: {e.strerror or e}", path) from None
        return counts
