"""Deprecated: moved to ``fpcore.sources`` (kept one release for old imports)."""
from .sources import open_source as open_model  # noqa: F401
from .sources.base import MAX_HEADER_BYTES, FileIdentity, TensorInfo, check_regular_file  # noqa: F401
from .sources.safetensors import COALESCE_GAP, READ_THREADS, SafetensorsFile  # noqa: F401
