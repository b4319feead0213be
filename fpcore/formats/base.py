"""Deprecated: moved to ``fpcore.sources.base``."""
from ..sources.base import *  # noqa: F401,F403
