"""What identifies a file and its content in the store: identities, keys, file records.

Pure data, no database: a file's identity (``stat_identity``, ``same_file``), the ``id:`` key
minted from it until its SHA-256 is known (``identity_key``), and what the store knows about
one file (``FileRecord``).
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass

from ..sources import FileIdentity

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

