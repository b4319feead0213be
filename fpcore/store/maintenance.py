"""Looking after the store as a whole: its counts and size (``info``), forgetting what no
file refers to any more (``prune``), emptying it (``clear``) — the ``fpcore cache`` command.
"""
from __future__ import annotations

import os
from pathlib import Path

from ..fingerprint import ALGO_VERSION
from .db import Database


class Maintenance(Database):
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
