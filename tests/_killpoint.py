"""Run ``python -m fpcore ARGS...`` and stop it (SIGSTOP) at a point of its progress, for
tests/test_faults.py's kill -9 tests: the scan can then never finish on its own before the
test kills it, however fast or busy the machine.

    python tests/_killpoint.py MARKER WHAT N -- ARGS...

WHAT is ``files`` or ``reports`` (rows in the store, counted after each write to it) or
``sidecars`` (tag sidecars written, counted after each one); N = 0 stops before the command
starts. At the point, MARKER is created and the process stops itself; the test then sends
SIGKILL. Other threads are stopped wherever they are, mid-write included.
"""
from __future__ import annotations

import os
import signal
import sqlite3
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))   # this checkout's fpcore


def main() -> int:
    marker, what, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    args = sys.argv[sys.argv.index("--") + 1:]

    def stop() -> None:
        Path(marker).touch()
        os.kill(os.getpid(), signal.SIGSTOP)

    if n == 0:
        stop()
    from fpcore import store as store_pkg
    from fpcore.scan import tags
    from fpcore.cli import main as cli_main

    db_file = Path(os.environ["FPCORE_CACHE"]) / store_pkg.DB_NAME
    done = [False]

    def reached() -> bool:
        if what == "sidecars":
            return len([f for f in Path(args[1]).glob("m*.json") if f.name != "m0.json"]) >= n
        try:
            con = sqlite3.connect(f"file:{db_file}?mode=ro", uri=True, timeout=5)
            try:
                return con.execute(f"SELECT count(*) FROM {what}").fetchone()[0] >= n
            finally:
                con.close()
        except sqlite3.Error:
            return False

    def check() -> None:
        if not done[0] and reached():
            done[0] = True
            stop()

    run = store_pkg.Store._run

    def run_and_check(self, fn, default=None, write=False):
        out = run(self, fn, default, write)
        if write and what != "sidecars":
            check()
        return out
    store_pkg.Store._run = run_and_check
    write_tags = tags.write

    def write_and_check(*a, **k):
        out = write_tags(*a, **k)
        if what == "sidecars":
            check()
        return out
    tags.write = write_and_check
    return cli_main(args)


if __name__ == "__main__":
    sys.exit(main())
