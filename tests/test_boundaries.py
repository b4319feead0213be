"""The engine's boundaries, checked on the source (AST), not by importing it.

- ``fpcore/`` imports nothing from a host (ComfyUI, A1111/Forge, gradio's server side); the
  standalone UI may import gradio lazily, inside a function of the front-end modules.
- Imports point one way along the data flow: sources -> layout/architecture -> fingerprint
  -> (store and references beside) -> match -> report -> facade -> front ends. A module may
  import its own layer or lower ones, and the import graph (lazy imports included) has no
  cycle.
- Every module has a layer: a new module must be placed in ``LAYERS`` (a test fails until it is).
"""
from __future__ import annotations

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
PKG = ROOT / "fpcore"

HOST_MODULES = {"comfy", "comfy_extras", "folder_paths", "modules", "launch", "gradio", "server", "execution", "webui"}
#: front-end modules that may import gradio inside a function (the standalone `fpcore ui` command)
LAZY_GRADIO = {"fpcore.cli", "fpcore.ui"}

#: layer of each module (a package's entry covers its submodules unless they are listed); lower = earlier
LAYERS: dict[str, int] = {
    # 0: base facts and helpers, importing nothing above them
    "fpcore": 0, "fpcore.errors": 0, "fpcore.paths": 0, "fpcore.dtypes": 0, "fpcore.facts": 0,
    "fpcore.exposure": 0, "fpcore.nnls": 0,
    # 1: sources (containers local and remote, the key maps between their layouts, whole-file hashing)
    "fpcore.sources": 1,
    # 2: layout and architecture
    "fpcore.layout": 2, "fpcore.arch": 2,
    # 3: fingerprint
    "fpcore.fingerprint": 3,
    # 4: beside the pipeline: the store (and the hashes a host stored), the references (library, .fpref
    # file, folder catalog, sketches and their index, known releases, packs)
    "fpcore.store": 4, "fpcore.refs": 4,
    # 5: matching
    "fpcore.match": 5,
    # 6: reports: identify (and what a file's metadata says), scan (tags, HTML report), pictures
    "fpcore.identify": 6, "fpcore.scan": 6, "fpcore.picture": 6,
    "fpcore.refs.pull": 6,   # known releases pulled as references (fingerprints them like identify)
    "fpcore.claims": 6,    # what a file and its sidecars claim, checked against the report; LoRA fits
    # 7: the facade hosts call
    "fpcore.api": 7,
    "fpcore.indexer": 7,   # `fpcore index`: reference packs from listings, on Dask (built on identify and packs)
    # 8: front ends: the command line (its commands, output, index command and demo) and the UI
    "fpcore.cli": 8, "fpcore.ui": 8, "fpcore.__main__": 8,
}


def _module_name(path: pathlib.Path, root: pathlib.Path = ROOT) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_module(name: str) -> bool:
    rel = pathlib.Path(*name.split("."))
    return (ROOT / rel).with_suffix(".py").is_file() or (ROOT / rel / "__init__.py").is_file()


def _imports(path: pathlib.Path, root: pathlib.Path = ROOT):
    """(imported fpcore module, lazy?, line) and (top-level foreign module, lazy?, line) of a file."""
    mod = _module_name(path, root)
    pkg = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    lazy_nodes = set()
    for fn in ast.walk(tree):
        if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
            lazy_nodes.update(id(n) for n in ast.walk(fn))
    ours, foreign = [], []
    for n in ast.walk(tree):
        lazy = id(n) in lazy_nodes
        if isinstance(n, ast.Import):
            for a in n.names:
                (ours if a.name.split(".")[0] == "fpcore" else foreign).append((a.name, lazy, n.lineno))
        elif isinstance(n, ast.ImportFrom):
            if n.level == 0:
                if n.module.split(".")[0] == "fpcore":
                    base = n.module
                else:
                    foreign.append((n.module, lazy, n.lineno))
                    continue
            else:
                parts = pkg.split(".")
                parts = parts[:len(parts) - (n.level - 1)]
                base = ".".join(parts + ([n.module] if n.module else []))
            for a in n.names:   # `from . import x` imports the module x when there is one
                sub = f"{base}.{a.name}"
                ours.append((sub if _is_module(sub) else base, lazy, n.lineno))
    return mod, ours, foreign


def _all_modules():
    return sorted(PKG.rglob("*.py"))


def layer_of(mod: str) -> int | None:
    """Layer of a module: its own entry, else its package's (the root package's entry is only
    its __init__, so an unlisted top-level module has no layer)."""
    while mod:
        if mod in LAYERS:
            return LAYERS[mod]
        mod = mod.rpartition(".")[0]
        if mod == "fpcore":
            return None
    return None


def test_every_module_has_a_layer():
    missing = [_module_name(p) for p in _all_modules() if layer_of(_module_name(p)) is None]
    assert not missing, f"place these modules in LAYERS of {__file__}: {missing}"


def host_imports(paths, root=ROOT) -> list[str]:
    bad = []
    for p in paths:
        mod, _, foreign = _imports(p, root)
        for name, lazy, line in foreign:
            top = name.split(".")[0]
            if top not in HOST_MODULES:
                continue
            if top == "gradio" and lazy and mod in LAZY_GRADIO:
                continue
            bad.append(f"{p.relative_to(root)}:{line} imports {name}")
    return bad


def test_no_host_imports():
    bad = host_imports(_all_modules())
    assert not bad, "fpcore must not import a host:\n" + "\n".join(bad)


def upward_imports(paths, root=ROOT) -> list[str]:
    bad = []
    for p in paths:
        mod, ours, _ = _imports(p, root)
        own = layer_of(mod)
        for dep, lazy, line in ours:
            d = layer_of(dep)
            if own is not None and d is not None and d > own:
                bad.append(f"{p.relative_to(root)}:{line} ({mod}, layer {own}) imports {dep} (layer {d})"
                           + (" lazily" if lazy else ""))
    return bad


def test_imports_point_one_way():
    bad = upward_imports(_all_modules())
    assert not bad, "upward imports:\n" + "\n".join(bad)


def _graph() -> dict[str, set[str]]:
    g: dict[str, set[str]] = {}
    for p in _all_modules():
        mod, ours, _ = _imports(p)
        g.setdefault(mod, set()).update(d for d, _, _ in ours if d != mod)
    return g


def find_cycle(g: dict[str, set[str]]) -> list[str] | None:
    WHITE, GREY, BLACK = 0, 1, 2
    colour = {n: WHITE for n in g}
    stack: list[str] = []

    def visit(n):
        colour[n] = GREY
        stack.append(n)
        for m in sorted(g.get(n, ())):
            if colour.get(m, BLACK) == GREY:
                return stack[stack.index(m):] + [m]
            if colour.get(m) == WHITE:
                c = visit(m)
                if c:
                    return c
        stack.pop()
        colour[n] = BLACK
        return None

    for n in sorted(g):
        if colour[n] == WHITE:
            c = visit(n)
            if c:
                return c
    return None


def test_no_import_cycle():
    g = _graph()
    # a package's __init__ importing its own submodules is how packages work, not a cycle
    for mod in g:
        g[mod] = {d for d in g[mod] if not (d.startswith(mod + ".") and (ROOT / pathlib.Path(*mod.split("."))).is_dir())}
    cycle = find_cycle(g)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


@pytest.mark.parametrize("graph, has_cycle", [
    ({"a": {"b"}, "b": {"c"}, "c": set()}, False),
    ({"a": {"b"}, "b": {"a"}}, True),
    ({"a": {"b"}, "b": {"c"}, "c": {"a"}}, True),
])
def test_the_cycle_finder_finds_cycles(graph, has_cycle):
    assert (find_cycle(graph) is not None) == has_cycle


def test_the_checks_would_fail_on_a_bad_module(tmp_path):
    """A module importing a host and a higher layer is caught (the checks are not vacuous)."""
    bad = tmp_path / "fpcore" / "sources" / "probe.py"
    bad.parent.mkdir(parents=True)
    bad.write_text("import folder_paths\nfrom ..identify import identify\n", encoding="utf-8")
    assert any("folder_paths" in b for b in host_imports([bad], tmp_path))
    assert any("fpcore.identify" in b for b in upward_imports([bad], tmp_path))


def test_the_layers_of_the_packages_by_role_hold(tmp_path):
    """A reference module reaching up to a front end, or a scan module to the façade, is caught: the
    packages' entries (fpcore.refs, fpcore.scan) cover their submodules."""
    for rel, code, want in (("fpcore/refs/probe.py", "from ..cli import main\n", "fpcore.cli"),
                            ("fpcore/scan/probe.py", "from .. import api\n", "fpcore.api")):
        bad = tmp_path / rel
        bad.parent.mkdir(parents=True, exist_ok=True)
        bad.write_text(code, encoding="utf-8")
        assert any(want in b for b in upward_imports([bad], tmp_path)), rel
