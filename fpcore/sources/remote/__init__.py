"""Remote model files, read by HTTP range requests: the header and the sampled ranges only.

A URL is read like a local file, through the same validation (``safetensors.parse_header``,
``element_ranges``, ``coalesce``): a lying or truncated header gives the same one-line error.
What differs is only how bytes arrive:

* the header in one or two requests: a speculative first read of :data:`HEADER_PROBE` bytes,
  then the rest when the header is larger;
* the sampled ranges coalesced (:data:`REMOTE_GAP`, wider than on disk: a request costs a round
  trip) and fetched concurrently over kept-alive connections (:data:`CONNECTIONS`), several ranges
  per request (``multipart/byteranges``) where the server honours it; a server that answers a
  multi-range request with the whole file is cut off after its first block and asked one range
  at a time instead;
* every ranged request carries ``If-Range`` (the ETag, else Last-Modified) and its answer's
  ``Content-Range`` total is checked, so a file that changes between requests is an error, never
  a fingerprint of two files.

Supported sources: ``http(s)://`` (redirects followed by hand, so the exposure policy is applied
to every hop and credentials never leave the host they are for), ``hf://OWNER/REPO/PATH[@REV]``
and ``https://huggingface.co/OWNER/REPO/resolve|blob/REV/PATH`` (through huggingface_hub when it is
installed: ``hf_hub_url``, ``get_token``, ``HfApi.get_paths_info``; ``HF_ENDPOINT`` honoured), and
any other fsspec URL (``s3://``, ``gs://``...) when fsspec and that filesystem are installed.

HTTP goes through ``requests`` (a urllib3 connection pool) with threads rather than fsspec's
aiohttp filesystem: bench/remote_speed.py measures both on the same server. ``requests`` also lets
the reader stop reading a body that should not be there (a 7 GB answer to a Range request), see
every redirect hop, and honour Retry-After.

Identity without a download: Hugging Face's ``X-Linked-ETag`` (the LFS SHA-256, sent with the
resolve redirect) or paths-info, and Civitai's model-version API (``/api/v1/model-versions/ID``)
give the file's SHA-256; the report then says ``hash: "published"``.

Credentials: ``HF_TOKEN`` or huggingface_hub's stored login for the hub's host,
``CIVITAI_API_TOKEN`` for civitai.com, ``headers`` (``--header``) for the URL's own host. Every
secret is registered with :func:`secret` and masked in log records; URLs are shown by
:func:`redact` (no user info, no token-like query values). Errors name the URL as the user gave
it, redacted, and say what to do.

One job per module:

- :mod:`.urls`: which paths are URLs, hub URLs parsed, credentials registered and masked, redaction;
- :mod:`.options`: :class:`RemoteOptions` and ``--header`` parsing;
- :mod:`.hub`: the SHA-256 the hubs publish (Hugging Face, Civitai);
- :mod:`.client`: HTTP requests with credentials, redirects, retries and timeouts;
- :mod:`.httpfile`: :class:`HttpFile`, the header probe and the (multi-)range reads;
- :mod:`.fsspecfile`: :class:`FsspecFile` for other fsspec URLs;
- :mod:`.source`: :class:`RemoteSafetensors`, :func:`open_url`, :func:`open_remote_file`;
- :mod:`.download`: :func:`download_hashes`.

Every name is importable from ``fpcore.sources.remote`` as before the split (settings such as
:data:`BACKOFF` are read where they are used: patch them on their module).
"""
from __future__ import annotations

import logging

from .client import (BACKOFF, CONNECT_TIMEOUT, MAX_REDIRECTS, MAX_RETRY_AFTER, READ_TIMEOUT, RETRIES,
                     RETRY_BUDGET, RETRY_STATUS, SINGLE_RANGE_CONNECTIONS, TOKEN_HINT, USER_AGENT, Gate, HttpClient)
from .download import download_hashes
from .fsspecfile import FsspecFile
from .httpfile import FIRST_BLOCK, MAX_BYTES_PER_REQUEST, MAX_RANGES_PER_REQUEST, HttpFile
from .hub import SHA256_RE
from .options import CONNECTIONS, HEADER_PROBE, RemoteOptions, parse_header_option
from .source import REMOTE_GAP, RemoteIdentity, RemoteSafetensors, open_remote_file, open_url
from .urls import (CIVITAI_HOSTS, HF_HOSTS, HF_RESOLVE, SECRET_PARAMS, HubFile, hf_endpoint, hub_url, is_url,
                   mask, parse_hf, redact, secret)

log = logging.getLogger(__name__)   # the logger every module of the package logs to

__all__ = ["BACKOFF", "CIVITAI_HOSTS", "CONNECTIONS", "CONNECT_TIMEOUT", "FIRST_BLOCK", "HEADER_PROBE", "HF_HOSTS",
           "HF_RESOLVE", "MAX_BYTES_PER_REQUEST", "MAX_RANGES_PER_REQUEST", "MAX_REDIRECTS", "MAX_RETRY_AFTER",
           "READ_TIMEOUT", "REMOTE_GAP", "RETRIES", "RETRY_BUDGET", "RETRY_STATUS", "SECRET_PARAMS", "SHA256_RE",
           "SINGLE_RANGE_CONNECTIONS", "TOKEN_HINT", "USER_AGENT", "FsspecFile", "Gate", "HttpClient", "HttpFile",
           "HubFile", "RemoteIdentity", "RemoteOptions", "RemoteSafetensors", "download_hashes", "hf_endpoint",
           "hub_url", "is_url", "mask", "open_remote_file", "open_url", "parse_header_option", "parse_hf",
           "redact", "secret"]
