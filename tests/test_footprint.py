"""What a command and a host start import: the heavy dependencies stay out until the work needs them.

Every command and every ComfyUI/A1111/Forge start pays for what the engine imports. A dependency
release once made one import cost 1-4 s for all of them without any test noticing (issue 23).
This test needs no clock: in a fresh interpreter it imports the CLI and the ComfyUI and A1111
glue, runs the everyday commands on fp16, bf16 and fp8 files, and checks ``sys.modules``.
"""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import testkit

ROOT = Path(__file__).resolve().parent.parent

#: imported only by the work that needs it: hf:// URLs (huggingface_hub), http(s) URLs (requests),
#: GGUF files (gguf), the HTML report's tree and merge fits (scipy); ml_dtypes never (fpcore.dtypes
#: decodes bf16 and fp8 itself); torch and PIL belong to the hosts
HEAVY = ("ml_dtypes", "scipy", "requests", "huggingface_hub", "gguf", "torch", "PIL", "urllib3", "fsspec",
         "fpcore.sources.remote",   # the URL machinery (17 ms): local files never need it
         "dask", "distributed", "ray", "pyarrow")   # `fpcore index` only

CHILD = textwrap.dedent('''
    import contextlib, importlib.util, io, json, os, sys, types
    root, files = sys.argv[1], json.loads(sys.argv[2])
    sys.path.insert(0, root)
    stages = {}

    def heavy():
        return sorted(m for m in HEAVY if m in sys.modules)

    # the ComfyUI glue: the pack imported under a path-made name, as ComfyUI does
    sys.modules["folder_paths"] = types.ModuleType("folder_paths")
    spec = importlib.util.spec_from_file_location("mfp_pack", os.path.join(root, "__init__.py"),
                                                  submodule_search_locations=[root])
    pack = importlib.util.module_from_spec(spec); sys.modules["mfp_pack"] = pack; spec.loader.exec_module(pack)
    assert pack.NODE_CLASS_MAPPINGS, "the node pack did not load"
    stages["ComfyUI pack"] = heavy()

    # the A1111/Forge glue, with stand-ins for the host's modules and gradio
    modules = types.ModuleType("modules")
    for name in ("script_callbacks", "sd_models", "shared"):
        m = types.ModuleType("modules." + name); setattr(modules, name, m); sys.modules[m.__name__] = m
    modules.script_callbacks.on_ui_tabs = modules.script_callbacks.on_ui_settings = \\
        modules.script_callbacks.on_model_loaded = lambda f: None
    sys.modules["modules"] = modules
    sys.modules["gradio"] = types.ModuleType("gradio")
    spec = importlib.util.spec_from_file_location("mfp_script", os.path.join(root, "scripts", "model_fingerprint.py"))
    script = importlib.util.module_from_spec(spec); spec.loader.exec_module(script)
    stages["A1111 script"] = heavy()

    from fpcore import cli
    def run(label, *argv):
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            try:
                code = cli.main(list(argv))
            except SystemExit as e:
                code = e.code
        assert code in (0, 3, None), (label, code)
        stages[label] = heavy()

    run("--help", "--help")
    run("refs list", "refs", "list")
    run("cache info", "cache", "info")
    for dt in ("F16", "BF16", "F8_E4M3"):
        path = files[dt]
        run("inspect " + dt, "inspect", path)
        run("identify --no-hash " + dt, "identify", "--no-hash", path)
    run("identify --json (hashed)", "identify", "--json", files["F16"])
    refs = os.path.join(os.environ["HOME"], "refs")
    run("refs add", "refs", "add", files["base"], "--name", "Base", "--refs", refs)
    for name in ("A", "B"):
        run("refs add", "refs", "add", files[name], "--name", name, "--parent", "Base", "--refs", refs)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        cli.main(["identify", "--json", "--no-hash", "--refs", refs, files["merge"]])
    stages["identify a merge"] = heavy()
    stages["merge found"] = [] if json.loads(out.getvalue())[0]["verdict"]["relation"] == "merge" else ["not a merge"]
    print(json.dumps(stages))
''')


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("footprint")
    spec = testkit.checkpoint_spec("sdxl", "tiny")
    sd = testkit.random_state_dict(spec, 7)
    out = {}
    for dt in ("F16", "BF16", "F8_E4M3"):
        p = d / f"m_{dt}.safetensors"
        testkit.write_safetensors(p, sd, dtype=dt)
        out[dt] = str(p)
    a, b = testkit.finetune(sd, 0.3, 1), testkit.finetune(sd, 0.3, 2)
    for name, m in (("base", sd), ("A", a), ("B", b), ("merge", testkit.merge([(a, 0.6), (b, 0.4)]))):
        testkit.write_safetensors(d / f"{name}.safetensors", m)
        out[name] = str(d / f"{name}.safetensors")
    return out


def test_commands_and_hosts_import_no_heavy_dependency(files, tmp_path):
    env = {"FPCORE_REFS": str(tmp_path / "refs"), "FPCORE_CACHE": str(tmp_path / "cache"),
           "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    code = f"HEAVY = {HEAVY!r}\n" + CHILD
    r = subprocess.run([sys.executable, "-c", code, str(ROOT), json.dumps(files)],
                       capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    stages = json.loads(r.stdout.strip().splitlines()[-1])
    assert set(stages) >= {"ComfyUI pack", "A1111 script", "--help", "identify --no-hash BF16",
                           "identify --no-hash F8_E4M3", "identify a merge"}
    assert {k: v for k, v in stages.items() if v} == {}


def test_the_guard_sees_an_import(files, tmp_path):
    """The check itself: a heavy import made on purpose in the child is reported."""
    code = f"HEAVY = ('json',)\n" + CHILD
    env = {"FPCORE_REFS": str(tmp_path / "refs"), "FPCORE_CACHE": str(tmp_path / "cache"),
           "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    r = subprocess.run([sys.executable, "-c", code, str(ROOT), json.dumps(files)],
                       capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    stages = json.loads(r.stdout.strip().splitlines()[-1])
    assert stages["ComfyUI pack"] == ["json"]
