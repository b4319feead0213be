"""Deprecated: moved to ``fpcore.sources.ckpt``."""
from ..sources.ckpt import *  # noqa: F401,F403
from ..sources.ckpt import MAX_LEGACY_PICKLE_BYTES, MAX_NESTING, MAX_PICKLE_BYTES, RestrictedUnpickler  # noqa: F401
