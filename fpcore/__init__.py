"""fpcore: identify Stable Diffusion checkpoints from a small sample of their weights.

The engine imports nothing from any host (ComfyUI, A1111, Forge, gradio).
"""
__version__ = "0.2.0"

from .errors import BadFileError, FpError, HeaderError, RefError, UnsupportedError  # noqa: E402,F401
