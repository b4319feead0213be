"""The ``fingerprints`` table: (content key, algorithm version) -> fingerprint, architecture,
metadata and stats. The key is a SHA-256 or, until the file is hashed, an ``id:`` key; when the
hash becomes known the fingerprint moves to it (``FilesTable.put_file``), so a copy or a rename
that is hashed finds it and is not fingerprinted again.
"""
from __future__ import annotations

import json
import logging
import time

from ..fingerprint import ALGO_VERSION, Fingerprint
from .db import Database

log = logging.getLogger("fpcore.store")

#: kept in a fingerprint's stats column: its sample_digest(), so that a scan can tell which
#: files may be byte copies without loading their fingerprints (dropped from the stats returned)
DIGEST_FIELD = "_sample_digest"


class FingerprintsTable(Database):
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
