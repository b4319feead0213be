"""The ``reports`` table: (content key, algorithm version, references token) -> a cached
report, so a repeat identify with unchanged references does no hashing, no weight reads and
no matching. One identify report per file content (a stale one goes when a new one is put);
scan's peer entries (token ``peers:...``) are kept apart from it.
"""
from __future__ import annotations

import json
import time

from ..fingerprint import ALGO_VERSION
from .db import Database


class ReportsTable(Database):
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
