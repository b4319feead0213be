"""Deprecated: moved to ``fpcore.sources.views`` and ``fpcore.keymaps``."""
from ..keymaps import OPENCLIP_BY_LAYERS, hf_clip_layers  # noqa: F401
from ..sources.views import OpenClipView, wrap  # noqa: F401
