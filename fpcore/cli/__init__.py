"""Command line: ``fpcore COMMAND …`` (or ``python -m fpcore COMMAND …``).

Every command is a row of :data:`COMMANDS`: its help, its own arguments, the shared
options it takes (parent parsers: ``--json``, ``--refs``, ``--cache``, ``--debug``) and the
function that runs it (fpcore.cli.commands). Commands call the engine only through
:mod:`fpcore.api`, the façade the ComfyUI nodes, the A1111/Forge tab and the standalone UI use
too, and import it inside the function, so ``fpcore --help`` or a cached ``identify`` loads
only what it needs.

Exit codes: 0 success; 2 usage error; 3 bad input (one line on stderr per bad file, the
others still reported); 4 nothing to do (a folder with no model files); 130 interrupted;
141 output pipe closed. Tracebacks only with ``--debug``. The JSON output is described in
docs/json-format.md.
"""
from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass, field
from typing import Callable

from .. import __version__
from .commands import (EXIT_BAD_INPUT, EXIT_INTERRUPTED, EXIT_NOTHING_FOUND, EXIT_PIPE_CLOSED, GRADIO_TESTED,  # noqa: F401
                       _cache, _demo, _hash, _identify, _inspect, _refs_add, _refs_catalog, _refs_export,
                       _refs_import, _refs_list, _refs_pull, _refs_remove, _scan, _ui)
from .index import index_args, run_index
from ..errors import FpError

JSON_DOC = "docs/json-format.md"


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # usage errors exit 2 with one line
        self.print_usage(sys.stderr)
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        sys.exit(2)


# ------------------------------------------------------------------ shared options

def _parent(*adders) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    for add in adders:
        add(p)
    return p


def _debug(p):   # also accepted before the command; SUPPRESS keeps that value
    p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                   help="show tracebacks and debug logging")


def _json(p):
    p.add_argument("--json", action="store_true", help=f"print JSON (fields: {JSON_DOC})")


def _refs(p):
    p.add_argument("--refs", metavar="DIR", help="user reference dir (default: $FPCORE_REFS)")


def _cache_dir(p):
    p.add_argument("--cache", metavar="DIR", help="cache dir holding the fingerprint store (default: $FPCORE_CACHE)")


def _no_cache(p):
    p.add_argument("--no-cache", action="store_true", help="neither read nor write the fingerprint store")


def _header(p):
    p.add_argument("--header", action="append", metavar="'NAME: VALUE'", default=[],
                   help="HTTP header for URLs (repeatable), e.g. 'Authorization: Bearer TOKEN'; HF_TOKEN and "
                        "CIVITAI_API_TOKEN are used for their sites without it")


PARENTS = {"debug": _debug, "json": _json, "refs": _refs, "cache": _cache_dir, "no-cache": _no_cache,
           "header": _header}


@dataclass
class Command:
    help: str
    run: Callable
    shared: tuple[str, ...] = ("debug",)
    args: Callable | None = None               # adds the command's own arguments
    sub: dict[str, "Command"] = field(default_factory=dict)


# ------------------------------------------------------------------ commands' own arguments

def _paths(p):
    p.add_argument("paths", nargs="+", metavar="PATH",
                   help="model files, diffusers folders or URLs (https://..., hf://OWNER/REPO/FILE[@REV]: only the "
                        "header and sampled ranges are read)")


def _hash_flags(p):
    g = p.add_mutually_exclusive_group()
    g.add_argument("--hash", action="store_true",
                   help="compute every file's SHA-256 (default: only where it decides something, "
                        "e.g. a file the size of an official release, or files about to be called identical)")
    g.add_argument("--no-hash", action="store_true", help="never compute a whole-file SHA-256")


def _identify_args(p):
    _paths(p)
    _hash_flags(p)


def _inspect_args(p):
    _paths(p)
    p.add_argument("--why", action="store_true", help="show the matching rule and why the others were rejected")


def _hash_args(p):
    p.add_argument("paths", nargs="+", metavar="PATH", help="files or URLs")
    p.add_argument("--download", action="store_true",
                   help="for a URL without a published hash: download it whole to hash it (streamed, not saved)")


def _scan_args(p):
    p.add_argument("dir", metavar="DIR", help="folder of models (searched recursively)")
    p.add_argument("--write-tags", action="store_true", help="write the <model>.json tag sidecars")
    p.add_argument("--dry-run", action="store_true", help="with --write-tags: show what would change, write nothing")
    p.add_argument("--report", metavar="FILE.html", help="write a self-contained HTML report")
    _hash_flags(p)


def _demo_args(p):
    p.add_argument("dir", nargs="?", default="fpcore-demo", metavar="DIR",
                   help="where to write the demo folder (default: ./fpcore-demo)")


def _cache_args(p):
    p.add_argument("action", choices=["info", "prune", "clear"])


def _ui_args(p):
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=None, help="port (default: gradio's, 7860 or the next free)")
    p.add_argument("--share", choices=["never", "always"], default="never",
                   help="gradio share link (default never: the UI stays on this machine)")
    p.add_argument("--models-dir", metavar="DIR", help="folder whose checkpoints the dropdown lists and scans")


def _refs_add_args(p):
    p.add_argument("path", metavar="PATH")
    p.add_argument("--name", required=True)
    p.add_argument("--parent", help="name of the reference this model was trained or merged from")
    p.add_argument("--note")
    p.add_argument("--no-hash", action="store_true", help="do not hash the file (no 'identical' matches)")


def _refs_pull_args(p):
    p.add_argument("url", nargs="?", metavar="URL", help="https://..., hf://OWNER/REPO/FILE[@REV], s3://...")
    p.add_argument("--name", help="name of the new reference")
    p.add_argument("--parent", help="name of the reference this model was trained or merged from")
    p.add_argument("--note")
    p.add_argument("--known", nargs="+", metavar="NAME",
                   help="known base releases to pull (names or aliases from refs catalog, or 'all')")


def _refs_import_args(p):
    p.add_argument("pack", metavar="PACK")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--rename", action="store_true", help="import a reference whose name is taken as 'NAME (2)'")
    g.add_argument("--skip", action="store_true", help="leave out references whose name is taken")


COMMANDS: dict[str, Command] = {
    "identify": Command("what is this model: architecture, base, relation", _identify,
                        ("debug", "json", "refs", "cache", "no-cache", "header"), _identify_args),
    "inspect": Command("architecture, components, dtypes and metadata from the header only", _inspect,
                       ("debug", "json", "header"), _inspect_args),
    "hash": Command("SHA-256, AutoV2 and AutoV3 of files (of a URL: the published hash, or --download)", _hash,
                    ("debug", "json", "cache", "no-cache", "header"), _hash_args),
    "scan": Command("identify every model under a folder; duplicates, merges, family tree", _scan,
                    ("debug", "json", "refs", "cache", "no-cache"), _scan_args),
    "demo": Command("write a small folder of generated models with known ancestry, scan it, write the report",
                    _demo, ("debug", "json"), _demo_args),
    "refs": Command("manage reference models", None, sub={
        "add": Command("fingerprint a model (file, folder or URL) and register it as a reference", _refs_add,
                       ("debug", "refs", "header"), _refs_add_args),
        "pull": Command("register a reference from a remote file (URL --name N) or known releases (--known)",
                        _refs_pull, ("debug", "json", "refs", "header"), _refs_pull_args),
        "catalog": Command("known base releases and where each is published", _refs_catalog, ("debug", "json"),
                           lambda p: p.add_argument("--all", action="store_true",
                                                    help="also releases without a known hub file")),
        "list": Command("list references", _refs_list, ("debug", "json", "refs")),
        "remove": Command("remove a user reference", _refs_remove, ("debug", "refs"),
                          lambda p: p.add_argument("name")),
        "export": Command("write references (default: all of yours) to one pack file to share", _refs_export,
                          ("debug", "json", "refs"),
                          lambda p: (p.add_argument("pack", metavar="PACK"),
                                     p.add_argument("names", nargs="*", metavar="NAME"))),
        "import": Command("verify a pack and add its references (asks on a name clash)", _refs_import,
                          ("debug", "json", "refs"), _refs_import_args),
    }),
    "index": Command("fingerprint every model of a listing (URLs or paths) into a reference pack, on a Dask "
                     "cluster (a local one by default)", run_index, ("debug", "json"), index_args),
    "cache": Command("the shared fingerprint store ($FPCORE_CACHE)", _cache, ("debug", "json", "cache"), _cache_args),
    "ui": Command("the 'Identify base model' web UI, standalone (needs gradio 3.41 or 4.x)", _ui,
                  ("debug", "refs", "cache"), _ui_args),
}


def _add_commands(sub, table: dict[str, Command], parents: dict, dest: str) -> None:
    for name, c in table.items():
        p = sub.add_parser(name, help=c.help, description=c.help, parents=[parents[s] for s in c.shared])
        if c.sub:
            _add_commands(p.add_subparsers(dest=f"{dest}_{name}", required=True, parser_class=_Parser), c.sub,
                          parents, f"{dest}_{name}")
            continue
        if c.args:
            c.args(p)
        p.set_defaults(_run=c.run)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="fpcore", description="Identify Stable Diffusion checkpoints by their weights.",
                epilog=f"JSON output (--json) and the tag sidecar keys are described in {JSON_DOC} "
                       "of the project's repository.")
    p.add_argument("--version", action="version", version=f"fpcore {__version__}")
    p.add_argument("--debug", action="store_true", help="show tracebacks and debug logging")
    parents = {k: _parent(add) for k, add in PARENTS.items()}
    sub = p.add_subparsers(dest="cmd", required=True, parser_class=_Parser, metavar="COMMAND")
    _add_commands(sub, COMMANDS, parents, "cmd")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    for name, default in (("json", False), ("refs", None), ("cache", None), ("no_cache", False)):
        if not hasattr(args, name):
            setattr(args, name, default)
    import logging
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.WARNING,
                        format="%(levelname)s: %(message)s", stream=sys.stderr)
    try:
        code = args._run(args)
        sys.stdout.flush()   # a closed pipe shows here, not at exit
        return code
    except BrokenPipeError:
        # `fpcore ... | head`: the reader is gone; say nothing more (stdout now goes nowhere)
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        except OSError:
            pass
        if args.debug:
            raise
        return EXIT_PIPE_CLOSED
    except KeyboardInterrupt:
        if args.debug:
            raise
        print("\nfpcore: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except FpError as e:
        if args.debug:
            raise
        print(f"fpcore: {e}", file=sys.stderr)
        return e.exit_code
    except OSError as e:   # a path that vanished, a full disk, a permission: one line
        if args.debug:
            raise
        where = f"{e.filename}: " if getattr(e, "filename", None) else ""
        print(f"fpcore: {where}{e.strerror or e}", file=sys.stderr)
        return EXIT_BAD_INPUT
