"""Model file formats other than safetensors, each exposing the source interface of
``fpcore.reader.SafetensorsFile``: ``path``, ``format``, ``size``, ``metadata``,
``tensors`` (file key -> TensorInfo), ``read_elements``, ``bytes_read``, ``close``."""
