"""The ``files`` table: a file's identity -> its content key, SHA-256 (or NULL), AutoV3 and
where the hash came from.

A file changed under the same name misses (its identity changed) and is fingerprinted again.
A file renamed or hard-linked (same device, inode, size and mtime; its change time moves with
the rename) keeps its key. A hash learnt later moves the file's fingerprint to the SHA-256 key.
"""
from __future__ import annotations

import os
import sqlite3
import time
from dataclasses import dataclass

from .db import Database
from .records import FileRecord, identity_key, same_file


class FilesTable(Database):
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

    def files_with_sha256(self, sha256: str) -> list[tuple[str, str]]:
        """(path, key) of the files recorded with this SHA-256 that still exist (the checkpoint a
        LoRA's training metadata names by hash may be one the user scanned)."""
        sha = (sha256 or "").lower()

        def q(con):
            return con.execute("SELECT path, key FROM files WHERE sha256=? ORDER BY seen DESC", (sha,)).fetchall()
        return [(p, k) for p, k in (self._run(q, default=[]) or []) if os.path.exists(p)]

    def forget_file(self, identity) -> None:
        """Drop a file whose content turned out to have changed (nothing cached for it)."""
        def q(con):
            with con:
                con.execute("DELETE FROM files WHERE path=?", (identity.path,))
        self._run(q, write=True)


@dataclass
class _Row:
    size: int
    mtime_ns: int
    inode: int
    ctime_ns: int | None
    dev: int | None
