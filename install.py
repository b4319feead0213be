"""Install what Model Fingerprint needs and the host lacks (requirements.txt beside this file).

A1111 and Forge run this file at start-up with the webui root on PYTHONPATH: there the
host's own ``launch.run_pip`` / ``launch.is_installed`` are used (so ``--skip-install``,
the index URL and the host's logging are honoured). ComfyUI-Manager installs
requirements.txt itself, then runs this file without a ``launch`` module: there the
missing ones are installed with ``python -m pip``. Packages the host already has are never
moved: numpy is held at the installed version while the others install.
"""
from __future__ import annotations

import importlib.metadata
import os
import re
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
REQUIREMENTS = os.path.join(HERE, "requirements.txt")

try:
    import launch  # A1111 / Forge
except ImportError:
    launch = None


def requirements(path: str | None = None) -> list[str]:
    out = []
    with open(path or REQUIREMENTS, encoding="utf-8") as f:
        for line in f:
            line = line.split("#", 1)[0].strip()
            if line and not line.startswith("-"):
                out.append(line)
    return out


def _name(req: str) -> str:
    return re.split(r"[\s<>=!~;\[]", req, maxsplit=1)[0]


def satisfied(req: str) -> bool:
    """Is ``req`` installed, in a version it accepts (the version is checked when ``packaging`` is there)."""
    name = _name(req)
    if launch is not None and not launch.is_installed(name):
        return False
    try:
        version = importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return False
    try:
        from packaging.requirements import Requirement
    except ImportError:
        return True
    try:
        return Requirement(req).specifier.contains(version, prereleases=True)
    except Exception:  # an unparsable line: presence is all we can tell
        return True


def _holds() -> list[str]:
    """Pins that keep the host's numpy where it is (hosts pin it; a new numpy can break them)."""
    try:
        return [f"numpy=={importlib.metadata.version('numpy')}"]
    except importlib.metadata.PackageNotFoundError:
        return []


def install(req: str) -> None:
    holds = [h for h in _holds() if _name(h) != _name(req)]
    if launch is not None:
        args = " ".join(f'"{a}"' for a in [req, *holds])
        launch.run_pip(f"install {args}", f"Model Fingerprint requirement: {req}")
    else:
        r = subprocess.run([sys.executable, "-m", "pip", "install", req, *holds])
        if r.returncode:
            sys.stderr.write(f"Model Fingerprint: could not install {req} (pip exit {r.returncode})\n")


def main() -> None:
    for req in requirements():
        if not satisfied(req):
            install(req)


if __name__ == "__main__":
    main()
