"""Installing fpcore into a host's Python never moves a package the host pins.

For A1111 1.10.1 and Forge, a venv holds the host's pinned versions of the packages fpcore could
touch (their requirements_versions.txt, below); then every documented install path is resolved
there with ``pip install --dry-run --report`` and no pinned package may be installed at another
version: ComfyUI-Manager's ``pip install -r requirements.txt``, and ``install.py`` (what A1111 and
Forge run at start-up, what Manager runs next, and the README's manual command for a host).
torch and gradio are not installed in these venvs (too large for a test): the reports must not
install them at all, which is stronger than keeping their version.

Needs the package registry; skipped when it cannot be reached. A pin the registry answers for but
no longer has fails (it would not install on the host either).
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

#: the pins of the packages in install.HELD that each host installs, from its requirements_versions.txt
#: (AUTOMATIC1111/stable-diffusion-webui v1.10.1; lllyasviel/stable-diffusion-webui-forge, main of 2025-06),
#: fastapi/pydantic as each resolves them; torch comes from the hosts' TORCH_COMMAND
HOSTS = {
    "a1111-1.10.1": {"numpy": "1.26.2", "fastapi": "0.94.0", "httpx": "0.24.1", "safetensors": "0.4.2",
                     "gradio": "3.41.2", "torch": "2.1.2"},
    "forge": {"numpy": "1.26.2", "fastapi": "0.104.1", "pydantic": "2.8.2", "huggingface-hub": "0.26.2",
              "httpx": "0.24.1", "safetensors": "0.4.2", "tqdm": "4.66.1", "gradio": "4.40.0", "torch": "2.3.1"},
}
NOT_INSTALLED = ("gradio", "torch")   # checked by "never installed", see the module docstring


def _norm(name: str) -> str:
    return name.lower().replace("_", "-")


@pytest.fixture(scope="module", params=sorted(HOSTS))
def host_venv(request, tmp_path_factory):
    name = request.param
    d = tmp_path_factory.mktemp(name)
    venv.EnvBuilder(with_pip=True).create(d)
    py = str(d / "bin" / "python")
    pins = [f"{k}=={v}" for k, v in HOSTS[name].items() if k not in NOT_INSTALLED]
    r = subprocess.run([py, "-m", "pip", "install", "-q", "--disable-pip-version-check", *pins],
                       capture_output=True, text=True, timeout=600)
    if r.returncode:
        missing = _pins_the_registry_lacks(py, r.stderr + r.stdout)
        if missing:     # the registry answers and has not got them: a pin that no longer installs
            pytest.fail(f"{name}: pinned versions the package registry does not have: {missing}")
        low = (r.stderr + r.stdout).lower()
        if any(w in low for w in ("connection", "network", "resolve", "no matching distribution", "timed out")):
            pytest.skip(f"package registry unreachable: {r.stderr.strip().splitlines()[-1:]}")
        pytest.fail(r.stderr)
    return name, py


def _pins_the_registry_lacks(py: str, pip_output: str) -> dict:
    """{requirement: versions the registry lists} for each 'No matching distribution found for X==v'
    in ``pip_output`` whose package the registry does list (so it was reached) without that version.
    Empty when the registry cannot be reached: pip's own failure does not tell the two apart."""
    out = {}
    for req in re.findall(r"no matching distribution found for ([A-Za-z0-9_.\-]+==[^\s;]+)", pip_output, re.I):
        name, version = req.split("==", 1)
        r = subprocess.run([py, "-m", "pip", "index", "versions", name, "--disable-pip-version-check"],
                           capture_output=True, text=True, timeout=300)
        listed = re.search(r"Available versions:\s*(.*)", r.stdout)
        if r.returncode == 0 and listed and version not in [v.strip() for v in listed.group(1).split(",")]:
            out[req] = listed.group(1).strip()[:200]
    return out


def _installed(py: str) -> dict:
    out = subprocess.run([py, "-m", "pip", "list", "--format", "json", "--disable-pip-version-check"],
                         capture_output=True, text=True, check=True).stdout
    return {_norm(p["name"]): p["version"] for p in json.loads(out)}


def _dry_run(py: str, args: list[str], tmp_path: Path) -> dict:
    report = tmp_path / f"report-{abs(hash(tuple(args)))}.json"
    r = subprocess.run([py, "-m", "pip", "install", "--dry-run", "--disable-pip-version-check", "-q",
                        "--report", str(report), *args], capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert r.returncode == 0, f"pip {args}: {r.stderr[-2000:]}"
    return {_norm(i["metadata"]["name"]): i["metadata"]["version"] for i in json.loads(report.read_text())["install"]}


def _check(host: str, before: dict, plan: dict, what: str) -> None:
    for name, version in HOSTS[host].items():
        if name in NOT_INSTALLED:
            assert name not in plan, f"{what} would install {name} {plan[name]} into {host}"
        else:
            assert before[name] == version
            assert plan.get(name, version) == version, f"{what} would move {host}'s {name} {version} -> {plan[name]}"


def test_requirements_txt_keeps_host_pins(host_venv, tmp_path):
    host, py = host_venv
    before = _installed(py)
    plan = _dry_run(py, ["-r", str(ROOT / "requirements.txt")], tmp_path)
    _check(host, before, plan, "pip install -r requirements.txt")


def test_install_py_keeps_host_pins(host_venv, tmp_path):
    """What install.py would run in this venv (it chooses the requirements and the holds there)."""
    host, py = host_venv
    before = _installed(py)
    code = ("import json, sys; sys.path.insert(0, sys.argv[1]); import install; "
            "print(json.dumps([install.install_args(r) for r in install.requirements() if not install.satisfied(r)]))")
    calls = json.loads(subprocess.run([py, "-c", code, str(ROOT)], capture_output=True, text=True, check=True,
                                      cwd=os.path.dirname(py)).stdout)
    assert calls, "a venv with only the host's pins lacks scipy and ml_dtypes: install.py must install them"
    assert any(c[0].startswith("scipy") for c in calls)
    for args in calls:
        assert any(a == f"numpy=={HOSTS[host]['numpy']}" for a in args[1:]), args   # the host's numpy is held
        plan = _dry_run(py, args, tmp_path)
        _check(host, before, plan, f"install.py ({args[0]})")


def test_plain_requirements_would_have_moved_numpy(host_venv, tmp_path):
    """The failure these tests guard against is real: the old requirements.txt lines, installed
    with plain pip, upgrade the hosts' numpy (scipy and ml_dtypes ask for a newer one)."""
    host, py = host_venv
    old = tmp_path / "old-requirements.txt"
    old.write_text("numpy>=1.24\nscipy>=1.10\nsafetensors>=0.4\nml_dtypes>=0.3\ntqdm>=4.60\ngguf>=0.10\n")
    plan = _dry_run(py, ["-r", str(old)], tmp_path)
    if plan.get("numpy", HOSTS[host]["numpy"]) == HOSTS[host]["numpy"]:
        pytest.skip("the registry's newest scipy/ml_dtypes no longer move numpy 1.26.2 (nothing to show)")
    assert plan["numpy"] != HOSTS[host]["numpy"]
