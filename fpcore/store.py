"""The shared fingerprint store: one SQLite database (WAL) under ``FPCORE_CACHE``.

Every file's content has a *key*: its SHA-256 once that is known, until then an ``id:`` key
minted from the file's identity the first time it is seen (most files are never hashed: the
fingerprint answers without it).

* ``files``: file identity (resolved path, size, mtime_ns, inode, ctime_ns, device) -> key,
  SHA-256 (or NULL), AutoV3, where the hash came from. A file changed under the same name
  misses (its identity changed) and is fingerprinted again. A file renamed or hard-linked
  (same device, inode, size and mtime; its change time moves with the rename) keeps its key.
* ``fingerprints``: (key, algorithm version) -> fingerprint, architecture, metadata.
  When a file's hash becomes known its fingerprint moves to the SHA-256 key, so a copy or a
  rename that is hashed finds it, and is not fingerprinted again.
* ``reports``: (key, version, references token) -> identify report, so a repeat identify
  with unchanged references does no hashing, no weight reads and no matching.

Schema 1 (before fingerprint-first scanning) keyed everything by SHA-256: it is migrated in
place (its files and fingerprints kept, its reports dropped: they are rebuilt from the
fingerprints and now say where their hash came from). A store written by a newer fpcore is
left alone (used without a cache), never rebuilt.

The CLI, ComfyUI and A1111 share it; several processes may write at once (WAL, busy
timeout, short transactions). A corrupt database is moved aside and rebuilt; a
read-only one is used read-only; if neither works fpcore runs without a cache. None of
these raise: they log one warning and carry on.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from . import paths
from .fingerprint import ALGO_VERSION, Fingerprint
from .sources import FileIdentity

log = logging.getLogger(__name__)

#: kept in a fingerprint's stats column: its sample_digest(), so that a scan can tell which
#: files may be byte copies without loading their fingerprints (dropped from the stats returned)
DIGEST_FIELD = "_sample_digest"

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
#: where a known SHA-256 came from (files.source) -> the report's ``hash`` field
HASH_ORIGIN = {"hash": "computed", "host": "host", "published": "published"}
NOT_COMPUTED = "not computed"


@dataclass
class FileStat(FileIdentity):
    """A file's identity with the change time and device (FileIdentity plus what a rewrite
    in place with the mtime set back, or a file on another disk, would show)."""
    ctime_ns: int = 0
    dev: int = 0


def stat_identity(path: str, st: os.stat_result | None = None) -> FileStat:
    st = st if st is not None else os.stat(path)
    return FileStat(os.path.realpath(path), st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns, st.st_dev)


def same_file(a, b) -> bool:
    """Same identity (path aside): size, mtime, inode, and change time / device where both know them."""
    if (a.size, a.mtime_ns, a.inode) != (b.size, b.mtime_ns, b.inode):
        return False
    for f in ("ctime_ns", "dev"):
        x, y = getattr(a, f, None), getattr(b, f, None)
        if x and y and x != y:
            return False
    return True


@dataclass
class FileRecord:
    """What the store knows about one file: its content key and, if known, its hashes."""
    key: str
    sha256: str | None = None
    autov3: str | None = None
    source: str | None = None          # "hash" | "host" | "published"
    renamed_from: str | None = None

    @property
    def hash_origin(self) -> str:
        return HASH_ORIGIN.get(self.source or "", "computed") if self.sha256 else NOT_COMPUTED


def identity_key(identity) -> str:
    """The key of a file's content until its hash is known: minted from its identity."""
    text = "|".join(str(getattr(identity, f, "")) for f in ("path", "size", "mtime_ns", "inode", "ctime_ns", "dev"))
    return "id:" + hashlib.blake2b(text.encode("utf-8", "surrogateescape"), digest_size=16).hexdigest()


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

    # -- file identity -> key and hashes ---------------------------------------------------
    def file_record(self, identity) -> FileRecord | None:
        """The record of an unchanged file (same path and identity), or of the same file renamed
        or hard-linked (same device, inode, size and mtime under another path)."""
        def q(con):
            row = con.execute("SELECT size, mtime_ns, inode, ctime_ns, dev, key, sha256, autov3, source "
                              "FROM files WHERE path=?", (identity.path,)).fetchone()
            if row and same_file(identity, _Row(*row[:5])):
                if row[3] is None and getattr(identity, "ctime_ns", None):   # migrated: learn the rest
                    with con:
                        con.execute("UPDATE files SET ctime_ns=?, dev=? WHERE path=?",
                                    (identity.ctime_ns, getattr(identity, "dev", None), identity.path))
                return FileRecord(row[5], row[6], row[7], row[8])
            dev = getattr(identity, "dev", None)
            if not dev:
                return None
            for path, key, sha, autov3, source in con.execute(
                    "SELECT path, key, sha256, autov3, source FROM files WHERE inode=? AND size=? AND mtime_ns=? "
                    "AND dev=? AND path<>?", (identity.inode, identity.size, identity.mtime_ns, dev, identity.path)):
                rec = FileRecord(key, sha, autov3, source, renamed_from=path)
                try:
                    self._remember(con, identity, rec)
                    if not os.path.lexists(path):   # renamed, not linked: the old name is gone
                        with con:
                            con.execute("DELETE FROM files WHERE path=?", (path,))
                except sqlite3.DatabaseError:      # read-only: still recognised, just not recorded
                    pass
                return rec
            return None
        return self._run(q)

    def lookup_file(self, identity) -> tuple[str, str | None] | None:
        """(SHA-256, AutoV3) of an unchanged file whose hash is known, else None."""
        rec = self.file_record(identity)
        return (rec.sha256, rec.autov3) if rec and rec.sha256 else None

    @staticmethod
    def _remember(con, identity, rec: FileRecord) -> None:
        with con:
            con.execute("INSERT OR REPLACE INTO files VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                        (identity.path, identity.size, identity.mtime_ns, identity.inode,
                         getattr(identity, "ctime_ns", None) or None, getattr(identity, "dev", None) or None,
                         rec.key, rec.sha256, rec.autov3, rec.source, time.time()))

    def put_file(self, identity, sha256: str | None = None, autov3: str | None = None,
                 source: str = "hash") -> FileRecord:
        """Record a file, with its hash when known; returns its record (the key to store its
        fingerprint and report under). A hash learnt later moves what the file's previous key
        held (fingerprint) to the SHA-256 key; its reports are dropped (they said "not computed")."""
        sha = sha256.lower() if sha256 else None

        def q(con):
            row = con.execute("SELECT size, mtime_ns, inode, ctime_ns, dev, key, sha256, autov3, source "
                              "FROM files WHERE path=?", (identity.path,)).fetchone()
            old = row[5] if row and same_file(identity, _Row(*row[:5])) else None
            if sha is None:
                rec = (FileRecord(old, row[6], row[7], row[8]) if old else FileRecord(identity_key(identity)))
                self._remember(con, identity, rec)
                return rec
            rec = FileRecord(sha, sha, autov3 or (row[7] if old and row[6] == sha else None), source)
            self._remember(con, identity, rec)
            if old and old != sha:
                with con:
                    con.execute("INSERT OR IGNORE INTO fingerprints SELECT ?, version, fingerprint, arch, metadata, "
                                "stats, created FROM fingerprints WHERE key=?", (sha, old))
                    # every other name of the same file (renamed, hard-linked) learns the hash too
                    con.execute("UPDATE files SET key=?, sha256=?, autov3=?, source=? WHERE key=?",
                                (sha, sha, rec.autov3, source, old))
                    if not old.startswith("id:"):
                        return rec
                    con.execute("DELETE FROM fingerprints WHERE key=?", (old,))
                    con.execute("DELETE FROM reports WHERE key=?", (old,))
            return rec
        fallback = FileRecord(sha or identity_key(identity), sha, autov3, source if sha else None)
        return self._run(q, default=fallback, write=True) or fallback

    def forget_file(self, identity) -> None:
        """Drop a file whose content turned out to have changed (nothing cached for it)."""
        def q(con):
            with con:
                con.execute("DELETE FROM files WHERE path=?", (identity.path,))
        self._run(q, write=True)

    # -- fingerprints ----------------------------------------------------------------------
    def get_fingerprint(self, key: str):
        """(Fingerprint, arch json, metadata, stats) stored under ``key`` (a SHA-256 or an id key), or None."""
        def q(con):
            return con.execute("SELECT fingerprint, arch, metadata, stats FROM fingerprints WHERE key=? AND version=?",
                               (key, ALGO_VERSION)).fetchone()
        row = self._run(q) if key else None
        if not row:
            return None
        try:
            stats = json.loads(row[3])
            stats.pop(DIGEST_FIELD, None)
            return Fingerprint.deserialize(row[0], str(self.path)), json.loads(row[1]), json.loads(row[2]), stats
        except Exception as e:  # a damaged entry is a miss, not a crash
            log.warning("%s: damaged cache entry for %s (%s); recomputing", self.path, key[:12], e)
            return None

    def sample_digest(self, key: str) -> str | None:
        """Fingerprint.sample_digest() of the fingerprint stored under ``key``, without loading it
        (None if not stored, or stored before digests were kept)."""
        def q(con):
            return con.execute("SELECT stats FROM fingerprints WHERE key=? AND version=?",
                               (key, ALGO_VERSION)).fetchone()
        row = self._run(q) if key else None
        try:
            return json.loads(row[0]).get(DIGEST_FIELD) if row else None
        except (ValueError, AttributeError):
            return None

    def put_fingerprint(self, key: str, fp: Fingerprint, arch: dict, metadata: dict, stats: dict) -> None:
        blob = fp.serialize()
        stats = {**stats, DIGEST_FIELD: fp.sample_digest()}

        def q(con):
            with con:
                con.execute("INSERT OR REPLACE INTO fingerprints VALUES (?,?,?,?,?,?,?)",
                            (key, ALGO_VERSION, blob, json.dumps(arch), json.dumps(metadata), json.dumps(stats),
                             time.time()))
        self._run(q, write=True)

    # -- reports -----------------------------------------------------------------------------
    def get_report(self, key: str, refs_token: str) -> dict | None:
        def q(con):
            return con.execute("SELECT report FROM reports WHERE key=? AND version=? AND refs_token=?",
                               (key, ALGO_VERSION, refs_token)).fetchone()
        row = self._run(q) if key else None
        if not row:
            return None
        try:
            return json.loads(row[0])
        except ValueError:
            return None

    def put_report(self, key: str, refs_token: str, report: dict) -> None:
        text = json.dumps(report, default=str)

        def q(con):
            with con:
                # one identify report per file content (stale ones go), peer entries kept apart
                con.execute("DELETE FROM reports WHERE key=? AND version=? AND refs_token<>? "
                            "AND (refs_token LIKE 'peers:%') = (? LIKE 'peers:%')",
                            (key, ALGO_VERSION, refs_token, refs_token))
                con.execute("INSERT OR REPLACE INTO reports VALUES (?,?,?,?,?)",
                            (key, ALGO_VERSION, refs_token, text, time.time()))
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
                n_fp = con.execute("DELETE FROM fingerprints WHERE key NOT IN (SELECT key FROM files) "
                                   "OR version<>?", (ALGO_VERSION,)).rowcount
                n_rep = con.execute("DELETE FROM reports WHERE key NOT IN (SELECT key FROM files) "
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


@dataclass
class _Row:
    size: int
    mtime_ns: int
    inode: int
    ctime_ns: int | None
    dev: int | None


def _statements(script: str) -> list[str]:
    """The statements of a script, to run one by one inside one transaction (executescript commits)."""
    out, buf = [], ""
    for line in script.splitlines(keepends=True):
        buf += line
        if sqlite3.complete_statement(buf):
            out.append(buf.strip())
            buf = ""
    return [s for s in out if s]
