"""The ``remote_files`` table (issue 16): fingerprints of files at a URL, keyed by what
identifies a URL's content. Created on first use, beside the schema's tables.
"""
from __future__ import annotations

import json
import logging
import sqlite3
import time

from ..fingerprint import ALGO_VERSION, Fingerprint
from .db import Database

log = logging.getLogger("fpcore.store")


class RemoteFilesTable(Database):
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
