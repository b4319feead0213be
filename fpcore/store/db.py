"""The store's database: opening it, its schema and migrations, and running a query.

``Database`` opens (or creates) the SQLite file in WAL mode, creates or migrates the schema
(once, whichever process comes first), moves a corrupt file aside and rebuilds it, falls back
to read-only, or to no cache at all; ``_run`` runs one query and degrades instead of raising
(busy, read-only, disk full, damaged underneath us). The tables' own queries are in the
sibling modules, composed into ``fpcore.store.Store``.
"""
from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
from pathlib import Path

from .. import paths

log = logging.getLogger("fpcore.store")

DB_NAME = "fpcore.sqlite3"
SCHEMA_VERSION = 2
SCHEMA = """
CREATE TABLE IF NOT EXISTS files (
    path TEXT PRIMARY KEY, size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL, inode INTEGER NOT NULL,
    ctime_ns INTEGER, dev INTEGER, key TEXT NOT NULL, sha256 TEXT, autov3 TEXT, source TEXT, seen REAL NOT NULL);
CREATE INDEX IF NOT EXISTS files_key ON files(key);
CREATE INDEX IF NOT EXISTS files_inode ON files(inode);
CREATE TABLE IF NOT EXISTS fingerprints (
    key TEXT NOT NULL, version INTEGER NOT NULL, fingerprint BLOB NOT NULL, arch TEXT NOT NULL,
    metadata TEXT NOT NULL, stats TEXT NOT NULL, created REAL NOT NULL, PRIMARY KEY (key, version));
CREATE TABLE IF NOT EXISTS reports (
    key TEXT NOT NULL, version INTEGER NOT NULL, refs_token TEXT NOT NULL, report TEXT NOT NULL,
    created REAL NOT NULL, PRIMARY KEY (key, version, refs_token));
"""
#: schema 1 -> 2, in one transaction: files and fingerprints keep their SHA-256 as key; reports
#: are dropped (rebuilt from the fingerprints, now with the ``hash`` field)
MIGRATE_1_2 = """
ALTER TABLE files RENAME TO files_v1;
ALTER TABLE fingerprints RENAME TO fingerprints_v1;
DROP TABLE IF EXISTS reports;
DROP INDEX IF EXISTS files_sha;
""" + SCHEMA + """
INSERT OR IGNORE INTO files (path, size, mtime_ns, inode, ctime_ns, dev, key, sha256, autov3, source, seen)
    SELECT path, size, mtime_ns, inode, NULL, NULL, lower(sha256), lower(sha256), autov3, source, seen
    FROM files_v1 WHERE length(sha256) = 64;
INSERT OR IGNORE INTO fingerprints SELECT lower(sha256), version, fingerprint, arch, metadata, stats, created
    FROM fingerprints_v1 WHERE length(sha256) = 64;
DROP TABLE files_v1;
DROP TABLE fingerprints_v1;
UPDATE meta SET v = '2' WHERE k = 'schema';
"""


class Database:
    """Open (or create) the store in ``directory`` (default: FPCORE_CACHE)."""

    def __init__(self, directory: str | os.PathLike | None = None, timeout: float = 30.0):
        self.dir = Path(directory) if directory else paths.cache_dir()
        self.path = self.dir / DB_NAME
        self.timeout = timeout
        self.readonly = False
        self.disabled_reason: str | None = None
        self._lock = threading.Lock()
        self._con: sqlite3.Connection | None = None
        self._open()

    # -- opening, corruption, read-only -------------------------------------------------
    @property
    def enabled(self) -> bool:
        return self._con is not None

    def _connect(self, readonly: bool, immutable: bool = False) -> sqlite3.Connection:
        if readonly:
            # immutable: a WAL database on a read-only file system, closed cleanly (no -shm to map)
            con = sqlite3.connect(f"file:{self.path}?mode=ro{'&immutable=1' if immutable else ''}", uri=True,
                                  timeout=self.timeout, check_same_thread=False)
        else:
            con = sqlite3.connect(str(self.path), timeout=self.timeout, check_same_thread=False)
        con.execute(f"PRAGMA busy_timeout = {int(self.timeout * 1000)}")
        return con

    def _open(self) -> None:
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            if not self.path.exists():
                return self._disable(f"cannot create cache dir {self.dir}: {e.strerror or e}")
        for attempt in range(2):
            try:
                con = self._connect(readonly=False)
                con.execute("PRAGMA journal_mode=WAL")
                con.execute("PRAGMA synchronous=NORMAL")
                if not self._prepare(con):
                    con.close()
                    return None
                self._con = con
                return None
            except sqlite3.DatabaseError as e:
                msg = str(e).lower()
                if "readonly" in msg or "read-only" in msg or "unable to open" in msg or "permission" in msg:
                    return self._open_readonly(e)
                if attempt == 0 and ("not a database" in msg or "malformed" in msg or "corrupt" in msg):
                    self._quarantine(e)
                    continue
                return self._disable(f"cannot use the fingerprint store {self.path}: {e}")

    def _open_readonly(self, why) -> None:
        if self.path.exists():
            for immutable in (False, True):
                try:
                    con = self._connect(readonly=True, immutable=immutable)
                    con.execute("SELECT count(*) FROM files").fetchone()
                    if self._schema_of(con) != SCHEMA_VERSION:   # cannot migrate it: not ours to read
                        con.close()
                        break
                    self._con, self.readonly = con, True
                    log.warning("%s: fingerprint store is read-only (%s); results will not be cached", self.path, why)
                    return
                except sqlite3.DatabaseError:
                    pass
        self._disable(f"fingerprint store {self.path} is not writable ({why}); working without a cache")

    def _prepare(self, con: sqlite3.Connection) -> bool:
        """Create or migrate the schema (once, whichever process comes first). False: the store
        belongs to a newer fpcore and is left alone."""
        con.execute("CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v TEXT)")
        con.commit()
        version = self._schema_of(con)
        if version == SCHEMA_VERSION:
            con.executescript(SCHEMA)   # indexes a crash between versions may have left out
            return True
        if version is not None and version > SCHEMA_VERSION:
            self._disable(f"fingerprint store {self.path} was written by a newer fpcore (schema {version}); "
                          "working without a cache")
            return False
        con.execute("BEGIN IMMEDIATE")  # one migrator at a time; the others wait, then see schema 2
        try:
            version = self._schema_of(con)
            if version is None:
                if con.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='files'").fetchone():
                    raise sqlite3.DatabaseError("store has tables but no schema version (corrupt)")
                for stmt in _statements(SCHEMA):
                    con.execute(stmt)
                con.execute("INSERT OR REPLACE INTO meta VALUES ('schema', ?)", (str(SCHEMA_VERSION),))
            elif version == 1:
                for stmt in _statements(MIGRATE_1_2):
                    con.execute(stmt)
                log.info("%s: fingerprint store migrated from schema 1 to %d", self.path, SCHEMA_VERSION)
            elif version != SCHEMA_VERSION:
                raise sqlite3.DatabaseError(f"store schema {version} is unknown (corrupt)")
            con.commit()
        except BaseException:
            con.rollback()
            raise
        return True

    @staticmethod
    def _schema_of(con: sqlite3.Connection) -> int | None:
        row = con.execute("SELECT v FROM meta WHERE k='schema'").fetchone()
        if row is None:
            return None
        try:
            return int(row[0])
        except (TypeError, ValueError):
            raise sqlite3.DatabaseError(f"store schema {row[0]!r} is not a number (corrupt)") from None

    def _quarantine(self, err) -> None:
        bad = self.path.with_name(f"{DB_NAME}.corrupt-{int(time.time())}")
        log.warning("%s: fingerprint store is damaged (%s); moved to %s and rebuilt", self.path, err, bad.name)
        for suffix in ("", "-wal", "-shm"):
            src = Path(str(self.path) + suffix)
            if src.exists():
                try:
                    os.replace(src, Path(str(bad) + suffix))
                except OSError:
                    pass

    def _disable(self, reason: str) -> None:
        self._con = None
        self.disabled_reason = reason
        log.warning("%s", reason)

    def _run(self, fn, default=None, write: bool = False):
        """Run ``fn(con)``; on a damaged or unwritable store, degrade instead of raising."""
        if self._con is None or (write and self.readonly):
            return default
        with self._lock:
            try:
                return fn(self._con)
            except sqlite3.DatabaseError as e:
                msg = str(e).lower()
                if "locked" in msg or "busy" in msg:
                    log.warning("%s: fingerprint store busy (%s); result not cached", self.path, e)
                    return default
                if "readonly" in msg or "read-only" in msg:
                    self.readonly = True
                    log.warning("%s: fingerprint store became read-only; results will not be cached", self.path)
                    return default
                if "disk" in msg and "full" in msg or "disk i/o" in msg:
                    log.warning("%s: %s; result not cached", self.path, e)
                    return default
                # damaged underneath us: rebuild once, else give up on caching
                try:
                    self._con.close()
                except sqlite3.Error:
                    pass
                self._con = None
                self._quarantine(e)
                self._open()
                return default

    def close(self) -> None:
        if self._con is not None:
            try:
                self._con.close()
            except sqlite3.Error:
                pass
            self._con = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _statements(script: str) -> list[str]:
    """The statements of a script, to run one by one inside one transaction (executescript commits)."""
    out, buf = [], ""
    for line in script.splitlines(keepends=True):
        buf += line
        if sqlite3.complete_statement(buf):
            out.append(buf.strip())
            buf = ""
    return [s for s in out if s]
