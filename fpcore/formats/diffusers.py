"""Deprecated: moved to ``fpcore.sources.diffusers``."""
from ..sources.diffusers import *  # noqa: F401,F403
from ..keymaps import *  # noqa: F401,F403
