"""Install Model Fingerprint's dependencies: into a host's Python without moving the host's pins,
or into a venv of its own for the command line.

Run by a host (no arguments): A1111 and Forge run this file at start-up with the webui root
on PYTHONPATH, ComfyUI-Manager runs it after requirements.txt (which lists nothing: a
requirements file cannot hold the host's versions). The dependencies of pyproject.toml that
are missing are installed, each together with ``==`` pins of the host's installed numpy,
torch, gradio, pydantic, fastapi, huggingface-hub, … (:data:`HELD`), so pip picks versions
that fit them instead of upgrading them. Under A1111/Forge the host's own ``launch.run_pip``
is used (``--skip-install``, the index URL and the host's logging are honoured).

Run by hand, for the command line in a venv of its own (the README's Quick start)::

    python3 install.py --venv .venv --demo    # create .venv, install fpcore in it, run `fpcore demo`
    python3 install.py --venv .venv --test    # add the test tools to .venv, run the test suite
"""
from __future__ import annotations

import importlib.metadata
import os
import re
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
PYPROJECT = os.path.join(HERE, "pyproject.toml")
REQUIREMENTS = PYPROJECT
#: packages hosts pin (A1111 1.10 and Forge requirements_versions.txt, ComfyUI's torch): installing
#: fpcore into a host's Python must leave each at the version installed
HELD = ("numpy", "torch", "torchvision", "torchaudio", "gradio", "gradio-client", "pydantic", "pydantic-core",
        "fastapi", "starlette", "httpx", "huggingface-hub", "safetensors", "tqdm", "transformers", "pillow",
        "protobuf", "scipy")

#: test processes at most. The suite is CPU-bound (a full run: about 6 min of CPU); on this project's
#: 2-core machine two processes ran it in 5 min 43 s with other jobs running. Beyond four, each
#: process's session fixtures (generated models) would cost more than they save
TEST_PROCESSES = 4

try:
    import launch  # A1111 / Forge
except ImportError:
    launch = None


def _pyproject_dependencies(path: str) -> list[str]:
    """``[project] dependencies`` of pyproject.toml (no tomllib before Python 3.11)."""
    with open(path, encoding="utf-8") as f:
        text = f.read()
    m = re.search(r"^dependencies\s*=\s*\[(.*?)\]", text, re.S | re.M)
    return re.findall(r"\"([^\"]+)\"", m.group(1)) if m else []


def requirements(path: str | None = None) -> list[str]:
    """The dependencies: pyproject.toml's, or the lines of a requirements-style file."""
    path = path or REQUIREMENTS
    if path.endswith(".toml"):
        return _pyproject_dependencies(path)
    out = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.split("#", 1)[0].strip()
            if line and not line.startswith("-"):
                out.append(line)
    return out


def _name(req: str) -> str:
    return re.split(r"[\s<>=!~;\[]", req, maxsplit=1)[0]


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def satisfied(req: str) -> bool:
    """Is ``req`` installed, in a version it accepts (the version is checked when ``packaging`` is there)."""
    name = _name(req)
    if launch is not None and not launch.is_installed(name):
        return False
    try:
        version = importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return False
    if _norm(name) in HELD:   # the host's version wins, whatever fpcore would prefer
        return True
    try:
        from packaging.requirements import Requirement
    except ImportError:
        return True
    try:
        return Requirement(req).specifier.contains(version, prereleases=True)
    except Exception:  # an unparsable line: presence is all we can tell
        return True


def _holds() -> list[str]:
    """``name==version`` of every held package the host has installed."""
    out = []
    for name in HELD:
        try:
            out.append(f"{name}=={importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            pass
    return out


def install_args(req: str) -> list[str]:
    """pip arguments that install ``req`` and keep every held package where it is."""
    return [req, *[h for h in _holds() if _norm(_name(h)) != _norm(_name(req))]]


def install(req: str) -> None:
    args = install_args(req)
    if launch is not None:
        launch.run_pip("install " + " ".join(f'"{a}"' for a in args), f"Model Fingerprint requirement: {req}")
    else:
        r = subprocess.run([sys.executable, "-m", "pip", "install", *args])
        if r.returncode:
            sys.stderr.write(f"Model Fingerprint: could not install {req} without moving the host's packages "
                             f"(pip exit {r.returncode})\n")


def main() -> None:
    for req in requirements():
        if not satisfied(req):
            install(req)


# ------------------------------------------------------------------ a venv of its own (Quick start)

def _venv_python(venv: str) -> str:
    return os.path.join(venv, "Scripts", "python.exe") if os.name == "nt" else os.path.join(venv, "bin", "python")


def _run(cmd: list[str]) -> None:
    print("+ " + " ".join(cmd), flush=True)
    r = subprocess.run(cmd, cwd=HERE)
    if r.returncode:
        sys.exit(r.returncode)


def standalone(argv: list[str]) -> int:
    import argparse
    p = argparse.ArgumentParser(prog="install.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--venv", default=".venv", metavar="DIR", help="the venv to create or reuse (default .venv)")
    p.add_argument("--demo", action="store_true", help="then run `fpcore demo` (writes ./fpcore-demo)")
    p.add_argument("--test", action="store_true", help="install the test tools and run the test suite")
    a = p.parse_args(argv)
    venv = os.path.abspath(os.path.join(HERE, a.venv))
    py = _venv_python(venv)
    if not os.path.exists(py):
        _run([sys.executable, "-m", "venv", venv])
    pip = [py, "-m", "pip", "install", "--disable-pip-version-check", "-q"]
    _run(pip + ["-e", ".[test]" if a.test else "."])
    if a.demo:
        _run([py, "-m", "fpcore", "demo"])
        fp = os.path.join(a.venv, "Scripts", "fpcore") if os.name == "nt" else os.path.join(a.venv, "bin", "fpcore")
        print(f"\nThe same on your own models: {fp} scan PATH/TO/MODELS --report report.html")
    if a.test:
        # two processes or more (pytest-xdist), one test file each at a time (module fixtures built once)
        r = subprocess.run([py, "-m", "pytest", "-q", "-n", "auto", "--maxprocesses", str(TEST_PROCESSES),
                            "--dist", "loadfile", "tests"], cwd=HERE)
        return r.returncode
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1:
        sys.exit(standalone(sys.argv[1:]))
    main()
