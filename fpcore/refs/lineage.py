"""The lineage tree of the reference library: each reference may name a parent.

A reference whose parent is named but not registered is an *orphan*; its declared ancestors stay
in its lineage. fpcore.refs.library's :class:`RefDB` has these.
"""
from __future__ import annotations


class LineageTree:
    """Parents, lineages and children over a library's references (``refs``: name -> Reference)."""

    def parent(self, name: str) -> str | None:
        """The registered parent, or None."""
        p = self.refs[name].parent if name in self.refs else None
        return p if p in self.refs else None

    def orphan(self, name: str) -> bool:
        """Names a parent that is not registered."""
        r = self.refs.get(name)
        return bool(r and r.parent and r.parent not in self.refs)

    def lineage(self, name: str) -> list[str]:
        """Chain of names from the root to ``name``; unregistered declared ancestors included."""
        chain, seen, cur = [], set(), name
        while cur and cur not in seen:
            seen.add(cur)
            chain.append(cur)
            cur = self.refs[cur].parent if cur in self.refs else None
        return chain[::-1]

    def children(self, name: str) -> list[str]:
        return sorted(n for n, r in self.refs.items() if r.parent == name)

    def children_map(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for n, r in self.refs.items():
            if r.parent:
                out.setdefault(r.parent, []).append(n)
        return out
