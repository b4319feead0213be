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

The modules, one per table on top of the database they share:

- ``records``: a file's identity and content key, what the store knows of a file
  (``stat_identity``, ``same_file``, ``identity_key``, ``FileRecord``); no database;
- ``db``: opening, the schema and its migrations, corruption, read-only, and ``_run`` (one
  query, degrading instead of raising) (``Database``, ``DB_NAME``, ``SCHEMA_VERSION``);
- ``files``, ``fingerprints``, ``reports``, ``remote``: each table's queries, a class each
  (``DIGEST_FIELD`` in ``fingerprints``);
- ``maintenance``: ``info``, ``prune``, ``clear``.

``Store`` is these tables composed on one connection. Every name is importable from
``fpcore.store`` itself.
"""
from __future__ import annotations

from ..fingerprint import ALGO_VERSION
from .db import DB_NAME, MIGRATE_1_2, SCHEMA, SCHEMA_VERSION, Database
from .files import FilesTable
from .fingerprints import DIGEST_FIELD, FingerprintsTable
from .maintenance import Maintenance
from .records import HASH_ORIGIN, NOT_COMPUTED, FileRecord, FileStat, identity_key, same_file, stat_identity
from .remote import RemoteFilesTable
from .reports import ReportsTable


class Store(FilesTable, FingerprintsTable, ReportsTable, RemoteFilesTable, Maintenance, Database):
    """Open (or create) the store in ``directory`` (default: FPCORE_CACHE)."""


__all__ = [
    "Store", "Database", "FilesTable", "FingerprintsTable", "ReportsTable", "RemoteFilesTable", "Maintenance",
    "FileRecord", "FileStat", "stat_identity", "same_file", "identity_key", "HASH_ORIGIN", "NOT_COMPUTED",
    "DB_NAME", "SCHEMA_VERSION", "SCHEMA", "MIGRATE_1_2", "DIGEST_FIELD", "ALGO_VERSION",
]
