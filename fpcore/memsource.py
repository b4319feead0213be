"""Deprecated: moved to ``fpcore.sources.memory`` and ``fpcore.keymaps`` (kept one release for old imports);
``identify_tensors`` is now ``fpcore.identify.identify_tensors``."""
from .keymaps import COMFY_LAYOUTS, remap  # noqa: F401
from .sources.memory import DTYPE_NAMES, MemorySource, dtype_name  # noqa: F401

