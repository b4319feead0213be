"""Deprecated: the container readers moved to ``fpcore.sources`` (kept one release for old imports)."""
