"""The shared fingerprint store: one SQLite database (WAL) under ``FPCORE_CACHE``.

* ``files``: file identity (resolved path, size, mtime_ns, inode) -> SHA-256, AutoV3.
  A file changed under the same name misses (its identity changed) and is re-hashed.
* ``fingerprints``: (SHA-256, algorithm version) -> fingerprint, architecture, metadata.
  A renamed or copied file reuses these as soon as its hash is known.
* ``reports``: (SHA-256, version, references token) -> identify report, so a repeat
  identify with unchanged references does no hashing, no weight reads and no matching.

The CLI, ComfyUI and A1111 share it; several processes may write at once (WAL, busy
timeout, short transactions). A corrupt database is moved aside and rebuilt; a
read-only one is used read-only; if neither works fpcore runs without a cache. None of
these raise: they log one warning and carry on.
"""
from __future__ import annotations

import json
import logging
import os
import sqlite3
import threading
import time
from pathlib import Path

from . import paths
from .fingerprint import ALGO_VERSION, Fingerprint

log = logging.getLogger(__name__)

DB_NAME = "fpcore.sqlite3"
SCHEMA_VERSION = 1
SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v TEXT);
CREATE TABLE IF NOT EXISTS files (
    path TEXT PRIMARY KEY, size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL, inode INTEGER NOT NULL,
    sha256 TEXT NOT NULL, autov3 TEXT, source TEXT, seen REAL NOT NULL);
CREATE INDEX IF NOT EXISTS files_sha ON files(sha256);
CREATE TABLE IF NOT EXISTS fingerprints (
    sha256 TEXT NOT NULL, version INTEGER NOT NULL, fingerprint BLOB NOT NULL, arch TEXT NOT NULL,
    metadata TEXT NOT NULL, stats TEXT NOT NULL, created REAL NOT NULL, PRIMARY KEY (sha256, version));
CREATE TABLE IF NOT EXISTS reports (
    sha256 TEXT NOT NULL, version INTEGER NOT NULL, refs_token TEXT NOT NULL, report TEXT NOT NULL,
    created REAL NOT NULL, PRIMARY KEY (sha256, version, refs_token));
"""


class Store:
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
                con.executescript(SCHEMA)
                self._check_schema(con)
                self._con = con
                return
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
                    self._con, self.readonly = con, True
                    log.warning("%s: fingerprint store is read-only (%s); results will not be cached", self.path, why)
                    return
                except sqlite3.DatabaseError:
                    pass
        self._disable(f"fingerprint store {self.path} is not writable ({why}); working without a cache")

    def _check_schema(self, con: sqlite3.Connection) -> None:
        row = con.execute("SELECT v FROM meta WHERE k='schema'").fetchone()
        if row is None:
            con.execute("INSERT OR IGNORE INTO meta VALUES ('schema', ?)", (str(SCHEMA_VERSION),))
            con.commit()
        elif int(row[0]) != SCHEMA_VERSION:
            raise sqlite3.DatabaseError(f"store schema {row[0]} is not {SCHEMA_VERSION} (corrupt or from another version)")

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

    # -- file identity -> hashes -----------------------------------------------------------
    def lookup_file(self, identity) -> tuple[str, str | None] | None:
        def q(con):
            row = con.execute("SELECT sha256, autov3, size, mtime_ns, inode FROM files WHERE path=?",
                              (identity.path,)).fetchone()
            if row and (row[2], row[3], row[4]) == (identity.size, identity.mtime_ns, identity.inode):
                return row[0], row[1]
            return None
        return self._run(q)

    def put_file(self, identity, sha256: str, autov3: str | None, source: str = "hash") -> None:
        def q(con):
            with con:
                con.execute("INSERT OR REPLACE INTO files VALUES (?,?,?,?,?,?,?,?)",
                            (identity.path, identity.size, identity.mtime_ns, identity.inode, sha256, autov3,
                             source, time.time()))
        self._run(q, write=True)

    # -- fingerprints ----------------------------------------------------------------------
    def get_fingerprint(self, sha256: str):
        """(Fingerprint, arch json, metadata, stats) or None."""
        def q(con):
            return con.execute("SELECT fingerprint, arch, metadata, stats FROM fingerprints WHERE sha256=? AND version=?",
                               (sha256, ALGO_VERSION)).fetchone()
        row = self._run(q)
        if not row:
            return None
        try:
            return Fingerprint.deserialize(row[0], str(self.path)), json.loads(row[1]), json.loads(row[2]), json.loads(row[3])
        except Exception as e:  # a damaged entry is a miss, not a crash
            log.warning("%s: damaged cache entry for %s (%s); recomputing", self.path, sha256[:12], e)
            return None

    def put_fingerprint(self, sha256: str, fp: Fingerprint, arch: dict, metadata: dict, stats: dict) -> None:
        blob = fp.serialize()

        def q(con):
            with con:
                con.execute("INSERT OR REPLACE INTO fingerprints VALUES (?,?,?,?,?,?,?)",
                            (sha256, ALGO_VERSION, blob, json.dumps(arch), json.dumps(metadata), json.dumps(stats),
                             time.time()))
        self._run(q, write=True)

    # -- reports -----------------------------------------------------------------------------
    def get_report(self, sha256: str, refs_token: str) -> dict | None:
        def q(con):
            return con.execute("SELECT report FROM reports WHERE sha256=? AND version=? AND refs_token=?",
                               (sha256, ALGO_VERSION, refs_token)).fetchone()
        row = self._run(q)
        if not row:
            return None
        try:
            return json.loads(row[0])
        except ValueError:
            return None

    def put_report(self, sha256: str, refs_token: str, report: dict) -> None:
        text = json.dumps(report, default=str)

        def q(con):
            with con:
                # one identify report per file content (stale ones go), peer entries kept apart
                con.execute("DELETE FROM reports WHERE sha256=? AND version=? AND refs_token<>? "
                            "AND (refs_token LIKE 'peers:%') = (? LIKE 'peers:%')",
                            (sha256, ALGO_VERSION, refs_token, refs_token))
                con.execute("INSERT OR REPLACE INTO reports VALUES (?,?,?,?,?)",
                            (sha256, ALGO_VERSION, refs_token, text, time.time()))
        self._run(q, write=True)

    # -- maintenance ----------------------------------------------------------------------------
    def info(self) -> dict:
        out = {"path": str(self.path), "enabled": self.enabled, "readonly": self.readonly,
               "disabled_reason": self.disabled_reason}

        def q(con):
            return {t: con.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in ("files", "fingerprints", "reports")}
        counts = self._run(q)
        if counts:
            out.update(counts)
        try:
            out["bytes"] = sum(Path(str(self.path) + s).stat().st_size for s in ("", "-wal")
                               if Path(str(self.path) + s).exists())
        except OSError:
            pass
        return out

    def prune(self) -> dict:
        """Forget files that are gone or changed, and fingerprints/reports no file refers to."""
        def q(con):
            gone = []
            for path, size, mtime_ns, inode in con.execute("SELECT path, size, mtime_ns, inode FROM files").fetchall():
                try:
                    st = os.stat(path)
                    if (st.st_size, st.st_mtime_ns, st.st_ino) != (size, mtime_ns, inode):
                        gone.append(path)
                except OSError:
                    gone.append(path)
            with con:
                con.executemany("DELETE FROM files WHERE path=?", [(p,) for p in gone])
                n_fp = con.execute("DELETE FROM fingerprints WHERE sha256 NOT IN (SELECT sha256 FROM files) "
                                   "OR version<>?", (ALGO_VERSION,)).rowcount
                n_rep = con.execute("DELETE FROM reports WHERE sha256 NOT IN (SELECT sha256 FROM files) "
                                    "OR version<>?", (ALGO_VERSION,)).rowcount
            con.execute("VACUUM")
            return {"files": len(gone), "fingerprints": n_fp, "reports": n_rep}
        return self._run(q, default={}, write=True)

    def clear(self) -> None:
        def q(con):
            with con:
                for t in ("files", "fingerprints", "reports"):
                    con.execute(f"DELETE FROM {t}")
            con.execute("VACUUM")
        self._run(q, write=True)

    # -- remote files (issue 16): their own table, keyed by what identifies a URL's content ----------
    #: a URL's content is identified by (URL as given, redacted; ETag; size); its SHA-256 when the hub
    #: publishes one is kept beside, and the fingerprint is also stored under it (put_fingerprint)
    REMOTE_SCHEMA = ("CREATE TABLE IF NOT EXISTS remote_files (url TEXT NOT NULL, etag TEXT NOT NULL, "
                     "size INTEGER NOT NULL, version INTEGER NOT NULL, sha256 TEXT, fingerprint BLOB NOT NULL, "
                     "arch TEXT NOT NULL, metadata TEXT NOT NULL, stats TEXT NOT NULL, created REAL NOT NULL, "
                     "PRIMARY KEY (url, etag, size, version))")

    def get_remote(self, url: str, etag: str | None, size: int):
        """(Fingerprint, arch json, metadata, stats, sha256) of a remote file seen with this ETag and
        size, or None (no ETag: nothing tells a changed file, so nothing is cached)."""
        if not etag:
            return None

        def q(con):
            try:
                return con.execute("SELECT fingerprint, arch, metadata, stats, sha256 FROM remote_files WHERE url=? "
                                   "AND etag=? AND size=? AND version=?", (url, etag, size, ALGO_VERSION)).fetchone()
            except sqlite3.OperationalError:   # no such table yet
                return None
        row = self._run(q)
        if not row:
            return None
        try:
            return (Fingerprint.deserialize(row[0], str(self.path)), json.loads(row[1]), json.loads(row[2]),
                    json.loads(row[3]), row[4])
        except Exception as e:  # a damaged entry is a miss
            log.warning("%s: damaged remote cache entry (%s); reading again", self.path, e)
            return None

    def put_remote(self, url: str, etag: str | None, size: int, sha256: str | None, fp: Fingerprint, arch: dict,
                   metadata: dict, stats: dict) -> None:
        """Remember a remote file's fingerprint; older entries of the same URL (another ETag) go."""
        if not etag:
            return
        blob = fp.serialize()

        def q(con):
            with con:
                con.execute(self.REMOTE_SCHEMA)
                con.execute("DELETE FROM remote_files WHERE url=? AND (etag<>? OR size<>?)", (url, etag, size))
                con.execute("INSERT OR REPLACE INTO remote_files VALUES (?,?,?,?,?,?,?,?,?,?)",
                            (url, etag, size, ALGO_VERSION, sha256, blob, json.dumps(arch), json.dumps(metadata),
                             json.dumps(stats), time.time()))
        self._run(q, write=True)

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
