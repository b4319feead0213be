"""Shared fixtures: small checkpoints with real key names, built on the fly (never downloaded)."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import testkit  # noqa: E402
from fpcore.refs.library import RefDB  # noqa: E402


@pytest.fixture(autouse=True)
def _isolated_dirs(tmp_path, monkeypatch):
    """No test touches the user's real reference dir or cache."""
    monkeypatch.setenv("FPCORE_REFS", str(tmp_path / "_refs"))
    monkeypatch.setenv("FPCORE_CACHE", str(tmp_path / "_cache"))


@pytest.fixture(scope="session")
def sd1_spec():
    return testkit.checkpoint_spec("sd1", "tiny")


@pytest.fixture(scope="session")
def lineage(sd1_spec):
    """A small SD1 family: Base, Child (30% fine-tune), Other (sibling of Child, registered), Indep."""
    base = testkit.random_state_dict(sd1_spec, 1)
    return {
        "Base": base,
        "Child": testkit.finetune(base, 0.30, 11, comps=("unet", "clip_l")),
        "Other": testkit.finetune(base, 0.30, 12, comps=("unet", "clip_l")),
        "Indep": testkit.random_state_dict(sd1_spec, 99),
    }


@pytest.fixture(scope="session")
def zoo_dir(tmp_path_factory, lineage):
    """The references written once as fp16 files."""
    d = tmp_path_factory.mktemp("lineage")
    for name, sd in lineage.items():
        testkit.write_safetensors(d / f"{name}.safetensors", sd, "F16")
    return d


@pytest.fixture
def db(tmp_path, zoo_dir):
    """Base <- Child, Base <- Other registered (Indep is not)."""
    from fpcore.identify import add_reference
    d = RefDB(tmp_path / "refs", builtin_dir=tmp_path / "no-builtin")
    for name, parent in (("Base", None), ("Child", "Base"), ("Other", "Base")):
        add_reference(d, zoo_dir / f"{name}.safetensors", name, parent=parent)
    return d


# ------------------------------------------------------------------ which tests skipped (for CI's second pass)
#: node ids of the tests this run skipped, written at the end of the run. The README's test command
#: runs in a newcomer's venv, where tests needing torch, a browser, gradio venvs or nginx skip; CI then
#: installs those and runs exactly these tests again (`pytest @.pytest_cache/fpcore-skipped.txt`).
SKIPPED_LIST = ROOT / ".pytest_cache" / "fpcore-skipped.txt"
_skipped: list[str] = []


def pytest_runtest_logreport(report):
    if report.skipped and report.when in ("setup", "call"):
        _skipped.append(report.nodeid)


def pytest_collectreport(report):
    if report.skipped and report.nodeid:   # a whole module skipped (pytest.skip at import: no torch)
        _skipped.append(report.nodeid)


def pytest_sessionfinish(session, exitstatus):
    if (getattr(session.config.option, "collectonly", False) or hasattr(session.config, "workerinput")
            or session.config.getoption("file_or_dir") != ["tests"]):
        return   # only a whole-suite run decides what the second pass runs (and not each xdist worker)
    try:
        SKIPPED_LIST.parent.mkdir(exist_ok=True)
        SKIPPED_LIST.write_text("".join(f"{n}\n" for n in dict.fromkeys(_skipped)))
    except OSError:
        pass
