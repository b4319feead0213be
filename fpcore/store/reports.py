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


#: keys per query of get_reports (SQLite allows 999 parameters in older builds)
REPORTS_PER_QUERY = 500


class ReportsTable(Database):
    # -- reports -----------------------------------------------------------------------------
    def get_report(self, key: str, refs_token: str) -> dict | None:
        return self.get_reports([key], refs_token).get(key)

    def get_reports(self, keys: list[str], refs_token: str) -> dict[str, dict]:
        """get_report() for many keys with one token: key -> report, for those cached (a folder's
        peer entries: one query per chunk instead of one per file)."""
        out: dict[str, dict] = {}
        keys = [k for k in dict.fromkeys(keys) if k]
        for i in range(0, len(keys), REPORTS_PER_QUERY):
            chunk = keys[i:i + REPORTS_PER_QUERY]

            def q(con, chunk=chunk):
                return con.execute(f"SELECT key, report FROM reports WHERE version=? AND refs_token=? AND key IN "
                                   f"({','.join('?' * len(chunk))})", (ALGO_VERSION, refs_token, *chunk)).fetchall()
            for key, text in self._run(q, default=[]):
                try:
                    out[key] = json.loads(text)
                except ValueError:
                    pass
        return out

    def put_report(self, key: str, refs_token: str, report: dict) -> None:
        self.put_reports([(key, refs_token, report)])

    def put_reports(self, items: list[tuple[str, str, dict]]) -> None:
        """put_report() for many (key, token, report), in one transaction."""
        rows = [(key, tok, json.dumps(report, default=str)) for key, tok, report in items]

        def q(con):
            with con:
                now = time.time()
                for key, tok, text in rows:
                    # one identify report per file content (stale ones go), peer entries kept apart
                    con.execute("DELETE FROM reports WHERE key=? AND version=? AND refs_token<>? "
                                "AND (refs_token LIKE 'peers:%') = (? LIKE 'peers:%')",
                                (key, ALGO_VERSION, tok, tok))
                    con.execute("INSERT OR REPLACE INTO reports VALUES (?,?,?,?,?)",
                                (key, ALGO_VERSION, tok, text, now))
        if rows:
            self._run(q, write=True)
