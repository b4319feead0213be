"""Deprecated: moved to ``fpcore.sources.memory`` and ``fpcore.keymaps`` (kept one release for old imports)."""
from .keymaps import COMFY_LAYOUTS, remap  # noqa: F401
from .sources.memory import DTYPE_NAMES, MemorySource, dtype_name  # noqa: F401


def identify_tensors(*args, **kwargs):
    from .identify import identify_tensors as f
    return f(*args, **kwargs)
