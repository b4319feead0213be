"""Deprecated: moved to ``fpcore.sources.gguf``."""
from ..sources.gguf import *  # noqa: F401,F403
