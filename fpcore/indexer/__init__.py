"""``fpcore index``: reference packs built from a listing of URLs or paths, on a distributed engine.

- ``listing``: the listing parsed (``SOURCE [NAME [PARENT]]`` a line), each entry's key;
- ``task``: what a worker does with one entry (fingerprint it, the .fpref bytes and its outcome);
- ``journal``: per-entry results kept as they arrive (SQLite; ``--resume``), the outcome table (CSV);
- ``engine``: Dask distributed, imported only when a job runs;
- ``job``: the driver: submit, record, retry what a lost worker dropped, write the pack.

Nothing here is imported by ``fpcore`` or the other commands.
"""
from __future__ import annotations

from .job import run

__all__ = ["run"]
