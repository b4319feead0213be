"""Model Fingerprint as a ComfyUI custom node pack.

ComfyUI imports this file under a module name made from its path, so everything
inside the pack is imported relatively. Outside ComfyUI (pytest, A1111, a plain
``import``) the folder still imports: without a parent package, or without
ComfyUI's modules, the node mappings are simply empty.
"""
import logging
import sys

WEB_DIRECTORY = "./web"

try:
    from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS
except ImportError as _e:
    if "folder_paths" in sys.modules:  # inside ComfyUI: let its import-failure report show the cause
        raise
    logging.getLogger(__name__).debug("Model Fingerprint nodes not loaded outside ComfyUI: %s", _e)
    NODE_CLASS_MAPPINGS = {}
    NODE_DISPLAY_NAME_MAPPINGS = {}

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS", "WEB_DIRECTORY"]
