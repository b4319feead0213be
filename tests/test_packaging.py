"""The wheel: built from this tree, installed into a fresh venv, used from there.

The venv gets the wheel alone (``--no-deps``); numpy, scipy and the rest come from this test
run's own site-packages through a ``.pth`` line placed after the venv's own, so nothing is
downloaded and the ``fpcore`` imported is the wheel's (checked). The full path, dependencies
from the registry included, is bench/fresh_clone.py.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _can_build_wheels_here() -> bool:
    """Can this Python's setuptools build a wheel without downloading anything? It has bdist_wheel
    itself from 70.1 on; before that only with the ``wheel`` package, which Python 3.11's own
    ``python3 -m venv`` (setuptools 65.5.0, no wheel) lacks: a newcomer's venv (issue 23)."""
    try:
        import setuptools
    except ImportError:
        return False
    try:
        import wheel  # noqa: F401
        return True
    except ImportError:
        parts = (setuptools.__version__.split(".") + ["0"])[:2]
        return tuple(int(p) if p.isdigit() else 0 for p in parts) >= (70, 1)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    build = tmp_path_factory.mktemp("build")   # not ./build: other builds may use it at the same time
    cmd = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--disable-pip-version-check", "-w", str(out)]
    if _can_build_wheels_here():
        cmd.append("--no-build-isolation")   # else pip builds in isolation, with setuptools from the registry
    env = dict(os.environ, TMPDIR=str(build))
    r = subprocess.run([*cmd, str(ROOT)], capture_output=True, text=True, timeout=600, env=env)
    assert r.returncode == 0, r.stderr
    (whl,) = out.glob("*.whl")
    return whl


@pytest.fixture(scope="module")
def installed(wheel, tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("venv")
    venv.EnvBuilder(with_pip=True).create(d)
    py = d / "bin" / "python"
    r = subprocess.run([str(py), "-m", "pip", "install", "-q", "--no-deps", "--disable-pip-version-check", str(wheel)],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    site = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    Path(site, "zz_test_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return d


def _run(venv_dir: Path, *args, cwd=None, env=None):
    e = dict(os.environ, **(env or {}))
    e.pop("PYTHONPATH", None)
    return subprocess.run([str(venv_dir / "bin" / args[0]), *map(str, args[1:])], capture_output=True, text=True,
                          cwd=cwd, env=e, timeout=300)


def test_wheel_holds_the_engine_and_its_data_only(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    assert "fpcore/data/known_hashes.json" in names and "fpcore/data/known_lineage.json" in names
    assert not [n for n in names if n.startswith(("testkit/", "tests/", "bench/")) or n == "fpcore/synth.py"]
    # every subpackage of fpcore/ is in it (pyproject lists them)
    pkgs = {p.parent.relative_to(ROOT).as_posix() for p in (ROOT / "fpcore").rglob("__init__.py")}
    missing = [p for p in pkgs if f"{p}/__init__.py" not in names]
    assert not missing, f"add to [tool.setuptools] packages in pyproject.toml: {missing}"
    assert "fpcore/cli/demo.py" in names


def test_installed_wheel_names_a_known_release_and_runs(installed, tmp_path):
    env = {"FPCORE_REFS": str(tmp_path / "refs"), "FPCORE_CACHE": str(tmp_path / "cache")}
    rows = json.loads((ROOT / "refs" / "known_hashes.json").read_text())
    entry = next(r for r in rows if r["family"] == "SD1.x")
    code = f"""
import json, sys, fpcore, fpcore.refs.known as known, fpcore.paths as paths
from fpcore import api
from fpcore.cli import demo
demo.write_safetensors(sys.argv[1], demo.random_model(demo.sd1_spec(), 5))
rep = api.identify_file(sys.argv[1], sha256={entry['sha256']!r})   # a host passes the hash it knows (A1111)
print(json.dumps({{"file": fpcore.__file__, "data": str(paths.BUILTIN_REFS), "n": len(known.table()),
                  "named": known.lookup({entry['sha256'].upper()!r}) is not None, "rep": rep}}))
"""
    r = _run(installed, "python", "-c", code, tmp_path / "m.safetensors", cwd=tmp_path, env=env)
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout)
    assert got["file"].startswith(str(installed)), got["file"]          # the wheel's fpcore, not this tree's
    assert got["data"].endswith(os.path.join("fpcore", "data"))
    assert got["n"] == len({row["sha256"].lower() for row in rows}) == 94
    assert got["named"]
    v = got["rep"]["verdict"]
    assert v["relation"] == "identical" and entry["variant"] in v["summary"] and "official" in v["summary"], v
    assert got["rep"]["known_release"]["variant"] == entry["variant"]
    # the command line of the wheel
    r = _run(installed, "fpcore", "--version", cwd=tmp_path, env=env)
    assert r.returncode == 0 and r.stdout.startswith("fpcore ")
    r = _run(installed, "fpcore", "inspect", tmp_path / "m.safetensors", "--json", cwd=tmp_path, env=env)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)[0]["architecture"]["family"] == "sd1"
    r = _run(installed, "fpcore", "--help", cwd=tmp_path, env=env)
    assert "docs/json-format.md" in r.stdout.replace("-\n", "-").replace("\n", " ")
