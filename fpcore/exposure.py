"""When the UI is reachable by others: confine paths, gate writes, refuse internal URLs.

Pure policy, no host imports: the glue (scripts/model_fingerprint.py, nodes.py, ``fpcore ui``)
reads its host's own flags and passes plain values here.

- Exposure is detected the way each host does it: A1111/Forge ``--listen``, ``--share``,
  ``--ngrok``, ``--server-name`` (A1111's own ``webui_is_non_local``); ComfyUI ``--listen`` with an
  address that is not loopback; ``fpcore ui --host`` not loopback, or ``--share``.
- When exposed, typed paths are resolved (symlinks, ``..``) and must stay inside the host's model
  folders; writes (tag sidecars, ``refs add``) need an opt-in that a visitor cannot switch on: the
  host's ``--enable-insecure-extension-access`` or the server environment's
  ``FPCORE_EXPOSED_WRITES=1`` (UI settings can be edited from the page, so they do not count).
- URLs (any time, exposed or not): the host name is resolved first and loopback, private,
  link-local (cloud metadata), unspecified, multicast and reserved addresses are refused unless
  ``FPCORE_ALLOW_PRIVATE_URLS=1``; the remote reader calls :func:`check_url` for the first URL and
  after every redirect.

Local-only UIs keep today's behaviour: :data:`LOCAL` allows every path and every write.
Every refusal is one :class:`~fpcore.errors.ExposureError` line naming the setting that allows it.
"""
from __future__ import annotations

import ipaddress
import os
import socket
from dataclasses import dataclass, field
from typing import Callable, Iterable
from urllib.parse import urlsplit

from .errors import ExposureError

#: environment settings of the server owner (a visitor of the page cannot change them)
ENV_WRITES = "FPCORE_EXPOSED_WRITES"
ENV_PRIVATE_URLS = "FPCORE_ALLOW_PRIVATE_URLS"
#: the hosts' own switches that allow writes (named in refusals)
WEBUI_INSECURE_FLAG = "--enable-insecure-extension-access"
#: names that always mean this machine
LOOPBACK_NAMES = ("localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback")
#: cloud metadata endpoints, named in refusals (all are also non-global addresses)
METADATA_ADDRESSES = frozenset({"169.254.169.254", "169.254.170.2", "100.100.100.200", "fd00:ec2::254"})
URL_SCHEMES = ("http", "https")


def env_flag(name: str, environ=None) -> bool:
    v = (environ if environ is not None else os.environ).get(name, "")
    return v.strip().lower() in ("1", "true", "yes", "on")


@dataclass(frozen=True)
class Policy:
    """What the UI may do. ``exposed``: reachable by others (``why`` says by which flag)."""

    exposed: bool = False
    why: str = ""
    roots: tuple[str, ...] = ()          # model folders, resolved
    allow_writes: bool = True
    write_setting: str = f"{ENV_WRITES}=1"
    allow_private_urls: bool = False
    extra: dict = field(default_factory=dict, compare=False)

    def describe(self) -> str:
        if not self.exposed:
            return "local UI: every path and write allowed"
        w = "writes allowed" if self.allow_writes else f"writes need {self.write_setting}"
        return f"reachable by others ({self.why}): paths limited to {len(self.roots)} model folder(s), {w}"


LOCAL = Policy()


def _resolve_roots(roots: Iterable) -> tuple[str, ...]:
    out: list[str] = []
    for r in roots:
        if not r:
            continue
        p = os.path.realpath(os.path.expanduser(os.fspath(r)))
        if p not in out:
            out.append(p)
    return tuple(out)


def make_policy(exposed: bool, why: str, roots: Iterable, *, host_allows_writes: bool = False,
                write_setting: str | None = None, environ=None) -> Policy:
    """A policy from detected exposure. Local: :data:`LOCAL` semantics (writes allowed)."""
    env_writes = env_flag(ENV_WRITES, environ)
    setting = write_setting or f"{ENV_WRITES}=1"
    return Policy(exposed=exposed, why=why, roots=_resolve_roots(roots),
                  allow_writes=(not exposed) or host_allows_writes or env_writes, write_setting=setting,
                  allow_private_urls=env_flag(ENV_PRIVATE_URLS, environ))


# -- exposure detection, per host (plain values in) ---------------------------------------------

def is_loopback_address(host: str | None) -> bool:
    """True for 127.0.0.0/8, ::1, localhost. Empty/None is not loopback (a server binds to all)."""
    if not host:
        return False
    h = host.strip().strip("[]").lower()
    if h in LOOPBACK_NAMES:
        return True
    try:
        ip = ipaddress.ip_address(h.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback


def webui_exposure(*, listen=False, share=False, ngrok=None, server_name=None) -> tuple[bool, str]:
    """A1111/Forge: as their ``cmd_opts.webui_is_non_local`` (modules/shared_cmd_options.py):
    any of --share, --listen, --ngrok, --server-name."""
    why = [flag for flag, on in (("--listen", listen), ("--share", share), ("--ngrok", ngrok),
                                 ("--server-name", server_name)) if on]
    return bool(why), " ".join(why)


def comfy_exposure(listen: str | None) -> tuple[bool, str]:
    """ComfyUI ``--listen`` (comfy/cli_args.py: default 127.0.0.1; bare --listen = "0.0.0.0,::";
    a comma-separated list): exposed when any address is not loopback."""
    addrs = [a.strip() for a in (listen if listen is not None else "127.0.0.1").split(",") if a.strip()]
    if not addrs:
        addrs = ["0.0.0.0"]
    open_ = [a for a in addrs if not is_loopback_address(a)]
    return bool(open_), (f"--listen {','.join(open_)}" if open_ else "")


def standalone_exposure(host: str | None, share: bool) -> tuple[bool, str]:
    """``fpcore ui``: --host not loopback, or --share."""
    why = []
    if not is_loopback_address(host or "127.0.0.1"):
        why.append(f"--host {host}")
    if share:
        why.append("--share")
    return bool(why), " ".join(why)


# -- paths --------------------------------------------------------------------------------------

def _inside(path: str, root: str) -> bool:
    try:
        return os.path.commonpath([path, root]) == root
    except ValueError:  # different drives
        return False


def confine(path: str | os.PathLike, policy: Policy, *, what: str = "path") -> str:
    """The path to use. Local: unchanged. Exposed: resolved (symlinks, ``..``), and refused unless
    inside one of the model folders."""
    p = os.fspath(path)
    if not policy.exposed:
        return p
    if "\x00" in p:
        raise ExposureError(f"{what} {p!r} is not a valid path")
    real = os.path.realpath(os.path.expanduser(p))
    if not any(_inside(real, r) for r in policy.roots):
        shown = ", ".join(policy.roots) or "none configured"
        raise ExposureError(
            f"{what} {p} is outside the model folders ({shown}): the UI is reachable by others "
            f"({policy.why}), so only those folders are allowed; put the file there, or run the UI on 127.0.0.1")
    return real


def check_write(policy: Policy, action: str) -> None:
    """Refuse ``action`` (writing tag sidecars, adding references) on an exposed UI without opt-in."""
    if policy.allow_writes:
        return
    raise ExposureError(f"{action} is refused: the UI is reachable by others ({policy.why}); "
                        f"the server owner allows it with {policy.write_setting}")


# -- URLs ---------------------------------------------------------------------------------------

Resolver = Callable[[str, int], Iterable[str]]


def system_resolver(host: str, port: int) -> list[str]:
    """Every address the system resolver gives for ``host``."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [i[4][0] for i in infos]


def _refusal(ip) -> str | None:
    """Why an address is internal, or None for a public one."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if str(ip) in METADATA_ADDRESSES:
        return "a cloud metadata address"
    for attr, text in (("is_loopback", "a loopback address"), ("is_unspecified", "an unspecified address"),
                       ("is_link_local", "a link-local address"), ("is_multicast", "a multicast address"),
                       ("is_private", "a private address"), ("is_reserved", "a reserved address")):
        if getattr(ip, attr):
            return text
    if not ip.is_global:
        return "not a public address"
    return None


def check_url(url: str, allow_private: bool, resolver: Resolver | None = None) -> None:
    """Refuse a URL whose host is, or resolves to, an internal address (unless ``allow_private``).
    Call for the first URL and again for every redirect target."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as e:
        raise ExposureError(f"URL {url!r} is not valid ({e})") from None
    if parts.scheme.lower() not in URL_SCHEMES:
        raise ExposureError(f"URL {url!r}: only http and https are read")
    host = parts.hostname
    if not host:
        raise ExposureError(f"URL {url!r} has no host")
    if allow_private:
        return
    port = port or (443 if parts.scheme.lower() == "https" else 80)
    try:
        addrs = [ipaddress.ip_address(host.split("%", 1)[0])]
    except ValueError:
        try:
            addrs = [ipaddress.ip_address(a.split("%", 1)[0]) for a in (resolver or system_resolver)(host, port)]
        except (OSError, UnicodeError, ValueError) as e:
            raise ExposureError(f"URL host {host} cannot be resolved ({e})") from None
        if not addrs:
            raise ExposureError(f"URL host {host} resolves to no address")
    for ip in addrs:
        why = _refusal(ip)
        if why:
            shown = host if str(ip) == host else f"{host} ({ip})"
            raise ExposureError(f"URL host {shown} is {why}; reading it is refused unless the server "
                                f"owner sets {ENV_PRIVATE_URLS}=1")


def url_policy_allows_private(policy: Policy | None = None, environ=None) -> bool:
    """The ``allow_private`` to pass to :func:`check_url`."""
    if policy is not None:
        return policy.allow_private_urls
    return env_flag(ENV_PRIVATE_URLS, environ)
