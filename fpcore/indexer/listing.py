"""The listing ``fpcore index`` reads: one model a line, tab-separated ``SOURCE [NAME [PARENT]]``.

* SOURCE: a URL (``http(s)://``, ``hf://OWNER/REPO/PATH[@REV]``, any fsspec URL) or a local path
  (a relative path is taken from the listing's folder, so a listing travels with its models);
* NAME: the reference's name, by default the file name without its model extension;
* PARENT: the name of the reference it was trained or merged from: another entry, or a reference
  the pack's users have (a built-in base).

A ``#`` at the start of a line (after blanks) or of a field starts a comment (``Model #2`` is a
name); blank lines are skipped.
Every problem is one line naming the listing and the line number. A SOURCE may carry a credential
(``?token=``, ``user:pass@``): it is kept in memory only, shown redacted, and stored nowhere (the
journal keys entries by a hash of the SOURCE).
"""
from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from urllib.parse import parse_qsl, unquote, urlsplit

from ..errors import BadFileError, FpError
from ..refs.packs import MAX_REFS, MAX_TEXT
from ..sources.remote.urls import SECRET_PARAMS, is_url, parse_hf, redact

#: extensions dropped from a file name to make the default NAME (A1111 and ComfyUI show
#: checkpoints without them)
MODEL_EXTENSIONS = (".safetensors", ".sft", ".ckpt", ".pt", ".pth", ".bin", ".gguf")
#: the largest listing read (10^5 URLs of ~200 bytes are 20 MB): a file larger is not a listing
MAX_LISTING_BYTES = 256 << 20
_COMMENT = re.compile(r"(^[ \t]*|\t[ ]*)#.*$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


@dataclass(frozen=True)
class Entry:
    """One line of a listing. ``source`` is the SOURCE as given (it may carry a credential: use
    ``shown`` wherever it is displayed or stored)."""

    line: int
    source: str
    name: str
    parent: str | None

    @property
    def key(self) -> str:
        """What the journal keys the entry by: a hash of the SOURCE (never the SOURCE itself)."""
        return hashlib.blake2b(self.source.encode(), digest_size=16).hexdigest()

    @property
    def shown(self) -> str:
        return redact(self.source) if is_url(self.source) else self.source

    @property
    def credential(self) -> bool:
        """Whether the SOURCE itself carries a credential (user info, a token-like query value)."""
        return carries_credential(self.source)


def carries_credential(source: str) -> bool:
    if not is_url(source):
        return False
    try:
        p = urlsplit(source)
        return bool(p.username or p.password) or any(SECRET_PARAMS.search(k) for k, _ in parse_qsl(p.query))
    except ValueError:
        return False


def default_name(source: str) -> str:
    """The file name of a URL or path, without a model extension."""
    if is_url(source):
        hub = parse_hf(source)
        path = hub.path if hub is not None else unquote(urlsplit(source).path)
    else:
        path = source
    base = os.path.basename(path.replace("\\", "/").rstrip("/"))
    for ext in MODEL_EXTENSIONS:
        if base.lower().endswith(ext) and len(base) > len(ext):
            return base[:-len(ext)]
    return base


def _text(value: str, what: str, where: str) -> str:
    if _CONTROL.search(value):
        raise ValueError(f"{where}: {what} has a control character")
    if len(value) > MAX_TEXT:
        raise ValueError(f"{where}: {what} is longer than {MAX_TEXT} characters")
    return value


def parse_line(text: str, lineno: int, base_dir: str) -> Entry | None:
    """One line as an Entry (None for a blank or comment line). Raises ValueError("line N: ...")."""
    where = f"line {lineno}"
    text = _COMMENT.sub("", text.rstrip("\r\n"))
    if not text.strip():
        return None
    fields = [f.strip() for f in text.rstrip().split("\t")]
    while fields and not fields[-1]:
        fields.pop()
    if len(fields) > 3:
        raise ValueError(f"{where}: {len(fields)} tab-separated fields; a line is SOURCE [NAME [PARENT]]")
    source = fields[0]
    if not source:
        raise ValueError(f"{where}: no SOURCE before the first tab")
    name = fields[1] if len(fields) > 1 and fields[1] else None
    parent = fields[2] if len(fields) > 2 and fields[2] else None
    if is_url(source):
        shown = redact(source)
        try:
            parse_hf(source)
        except FpError as e:
            raise ValueError(f"{where}: {e.message}: {shown}") from None
        if not urlsplit(source).netloc and not source.startswith("hf://"):
            raise ValueError(f"{where}: {shown} has no host")
        if re.search(r"\s", source):
            raise ValueError(f"{where}: the URL {shown} has a space in it (fields are separated by tabs)")
    else:
        _text(source, "SOURCE", where)
        source = os.path.normpath(os.path.join(base_dir, os.path.expanduser(source)))
    if name is None:
        name = default_name(source)
        if not name:
            raise ValueError(f"{where}: no file name in SOURCE to name the reference after; give a NAME")
    _text(name, "NAME", where)
    if parent is not None:
        _text(parent, "PARENT", where)
        if parent == name:
            raise ValueError(f"{where}: {name!r} is its own PARENT")
    return Entry(lineno, source, name, parent)


def parse_listing(path: str | os.PathLike) -> list[Entry]:
    """Every entry of the listing at ``path``. Raises BadFileError naming the line on any problem:
    a malformed line, a NAME or SOURCE listed twice, a parent chain that loops."""
    where = os.fspath(path)
    try:
        if os.path.getsize(where) > MAX_LISTING_BYTES:
            raise BadFileError(f"larger than {MAX_LISTING_BYTES >> 20} MB: not a listing", where)
        with open(where, "rb") as f:
            raw = f.read()
        text = raw.decode("utf-8-sig")
    except OSError as e:
        raise BadFileError(f"cannot read the listing: {e.strerror or e}", where) from None
    except UnicodeDecodeError as e:
        raise BadFileError(f"not UTF-8 text (byte {e.start}): a listing is one SOURCE [NAME [PARENT]] a line",
                           where) from None
    base_dir = os.path.dirname(os.path.abspath(where))
    entries: list[Entry] = []
    by_name: dict[str, Entry] = {}
    by_source: dict[str, Entry] = {}
    try:
        for i, line in enumerate(text.split("\n"), 1):
            e = parse_line(line, i, base_dir)
            if e is None:
                continue
            if e.name in by_name:
                raise ValueError(f"line {i}: NAME {e.name!r} is already used on line {by_name[e.name].line}"
                                 + ("" if len(line.split("\t")) > 1 else " (give each entry a NAME)"))
            if e.source in by_source:
                raise ValueError(f"line {i}: {e.shown} is already listed on line {by_source[e.source].line}")
            by_name[e.name] = by_source[e.source] = e
            entries.append(e)
            if len(entries) > MAX_REFS:
                raise ValueError(f"line {i}: more than {MAX_REFS} entries (the most one pack holds); split the listing")
        for e in entries:                      # parent chains inside the listing end
            seen, cur = [e.name], e.parent
            while cur in by_name:
                if cur in seen:
                    raise ValueError(f"line {e.line}: the PARENT chain loops: {' -> '.join(seen + [cur])}")
                seen.append(cur)
                cur = by_name[cur].parent
    except ValueError as err:
        raise BadFileError(str(err), where) from None
    if not entries:
        raise BadFileError("no entries (every line is blank or a comment)", where)
    return entries


def depth_order(entries: list[Entry]) -> list[Entry]:
    """Parents before their children (by depth inside the listing), then in listing order: the
    order a pack lists references in, the same whatever order they were fingerprinted in."""
    by_name = {e.name: e for e in entries}

    def depth(e: Entry) -> int:
        d, cur = 0, e.parent
        while cur in by_name:
            d, cur = d + 1, by_name[cur].parent
        return d
    return sorted(entries, key=lambda e: (depth(e), e.line))
