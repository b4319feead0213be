"""An exposed UI: exposure detection per host (their real argument names), path confinement
(symlinks, ``..``), write gating, and URL host checks (loopback, private, link-local, metadata)."""
from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import types
from pathlib import Path

import pytest

import testkit
from fpcore import exposure, ui
from fpcore.errors import ExposureError, FpError

ROOT = Path(__file__).resolve().parent.parent


# -- the hosts' own parsers, with the argument names read from their source -----------------------

def webui_parser() -> argparse.ArgumentParser:
    """The exposure-related arguments of A1111 v1.10.1 / Forge modules/cmd_args.py, as declared there."""
    p = argparse.ArgumentParser()
    p.add_argument("--ckpt-dir", type=str, default=None)
    p.add_argument("--vae-dir", type=str, default=None)
    p.add_argument("--share", action="store_true")
    p.add_argument("--ngrok", type=str, default=None)
    p.add_argument("--enable-insecure-extension-access", action="store_true")
    p.add_argument("--listen", action="store_true")
    p.add_argument("--server-name", type=str, default=None)
    p.add_argument("--text-encoder-dir", type=str, default=None)      # Forge
    p.add_argument("--forge-ref-a1111-home", type=Path, default=None)  # Forge
    return p


def comfy_parser() -> argparse.ArgumentParser:
    """comfy/cli_args.py: --listen [IP], default 127.0.0.1, bare --listen = "0.0.0.0,::"."""
    p = argparse.ArgumentParser()
    p.add_argument("--listen", type=str, default="127.0.0.1", metavar="IP", nargs="?", const="0.0.0.0,::")
    return p


@pytest.mark.parametrize("argv,exposed", [
    ([], False), (["--listen"], True), (["--share"], True), (["--ngrok", "tok"], True),
    (["--server-name", "0.0.0.0"], True), (["--enable-insecure-extension-access"], False),
])
def test_webui_exposure_follows_a1111(argv, exposed):
    o = webui_parser().parse_args(argv)
    got, why = exposure.webui_exposure(listen=o.listen, share=o.share, ngrok=o.ngrok, server_name=o.server_name)
    # A1111 modules/shared_cmd_options.py: webui_is_non_local = any([share, listen, ngrok, server_name])
    assert got == any([o.share, o.listen, o.ngrok, o.server_name]) == exposed
    assert ("--" in why) == exposed


@pytest.mark.parametrize("argv,exposed", [
    ([], False), (["--listen"], True), (["--listen", "127.0.0.1"], False), (["--listen", "127.0.0.1,::1"], False),
    (["--listen", "192.168.1.5"], True), (["--listen", "127.0.0.1,0.0.0.0"], True), (["--listen", "::"], True),
])
def test_comfy_exposure(argv, exposed):
    assert exposure.comfy_exposure(comfy_parser().parse_args(argv).listen)[0] == exposed


@pytest.mark.parametrize("host,share,exposed", [
    ("127.0.0.1", False, False), ("localhost", False, False), ("::1", False, False), ("0.0.0.0", False, True),
    ("192.168.0.2", False, True), ("127.0.0.1", True, True)])
def test_standalone_exposure(host, share, exposed):
    assert exposure.standalone_exposure(host, share)[0] == exposed


# -- paths ---------------------------------------------------------------------------------------

@pytest.fixture()
def tree(tmp_path):
    models = tmp_path / "models"
    (models / "sub").mkdir(parents=True)
    outside = tmp_path / "outside"
    outside.mkdir()
    spec = testkit.checkpoint_spec("sd1", "tiny")
    sd = testkit.random_state_dict(spec, 3)
    testkit.write_safetensors(models / "a.safetensors", sd, "F16")
    testkit.write_safetensors(outside / "secret.safetensors", sd, "F16")
    os.symlink(outside, models / "link_out")                      # a symlinked folder leaving the root
    os.symlink(outside / "secret.safetensors", models / "sneaky.safetensors")
    os.symlink(models / "a.safetensors", models / "sub" / "inside_link.safetensors")
    return types.SimpleNamespace(root=tmp_path, models=models, outside=outside)


def exposed_policy(tree, **kw):
    return exposure.make_policy(True, "--listen", [tree.models], environ={}, **kw)


def test_local_policy_changes_nothing(tree):
    p = exposure.LOCAL
    for path in (tree.outside / "secret.safetensors", tree.models / ".." / "outside"):
        assert exposure.confine(path, p) == os.fspath(path)
    exposure.check_write(p, "writing tag sidecars")


def test_exposed_confines_paths(tree):
    p = exposed_policy(tree)
    assert exposure.confine(tree.models / "a.safetensors", p) == str((tree.models / "a.safetensors").resolve())
    assert exposure.confine(tree.models / "sub" / "inside_link.safetensors", p).endswith("a.safetensors")
    assert exposure.confine(tree.models / "sub" / ".." / "a.safetensors", p)
    for bad in (tree.outside / "secret.safetensors", f"{tree.models}/../outside/secret.safetensors",
                tree.models / "sneaky.safetensors", tree.models / "link_out" / "secret.safetensors",
                tree.models / "link_out", "/etc/passwd", f"{tree.root}/models_evil"):
        with pytest.raises(ExposureError) as e:
            exposure.confine(bad, p)
        msg = str(e.value)
        assert "\n" not in msg and "outside the model folders" in msg and "127.0.0.1" in msg, msg
        assert isinstance(e.value, FpError)


def test_writes_need_the_opt_in(tree):
    with pytest.raises(ExposureError) as e:
        exposure.check_write(exposed_policy(tree), "writing tag sidecars")
    assert "FPCORE_EXPOSED_WRITES=1" in str(e.value) and "\n" not in str(e.value)
    exposure.check_write(exposed_policy(tree, host_allows_writes=True), "writing tag sidecars")
    exposure.check_write(exposure.make_policy(True, "--share", [tree.models],
                                              environ={"FPCORE_EXPOSED_WRITES": "1"}), "x")


# -- the UI handlers under an exposed policy ------------------------------------------------------

def test_ui_handlers_refuse_when_exposed_and_allow_when_local(tree, tmp_path):
    refs, cache = tmp_path / "refs", tmp_path / "cache"
    ex = ui.StandaloneHost(tree.models, refs_dir=refs, cache_dir=cache, policy=exposed_policy(tree))
    loc = ui.StandaloneHost(tree.models, refs_dir=refs, cache_dir=cache)
    # identify: a name outside (typed folder, .., symlink) is refused; inside works
    assert ui.identify_named(ex, "a.safetensors")["error"] is None
    for name, mdir in (("secret.safetensors", str(tree.outside)), ("../outside/secret.safetensors", None),
                       ("sneaky.safetensors", None), (str(tree.outside / "secret.safetensors"), None)):
        rep = ui.identify_named(ex, name, mdir)
        assert rep.get("refused") and "outside the model folders" in rep["error"], (name, rep["error"])
        assert ui.identify_named(loc, name, mdir)["error"] is None, name
    # scan: outside refused, inside fine; tags need the opt-in
    with pytest.raises(ExposureError):
        ui.scan(ex, str(tree.outside))
    with pytest.raises(ExposureError):
        ui.scan(ex, str(tree.models / "link_out"))
    with pytest.raises(ExposureError, match="writing tag sidecars"):
        ui.scan(ex, str(tree.models), write_tags=True)
    assert not list(tree.models.glob("*.json"))
    # links inside that lead out (sneaky.safetensors, link_out/) are skipped and listed, the rest is scanned
    res = ui.scan(ex, str(tree.models))
    assert sorted(os.path.relpath(r["path"], res["root"]) for r in res["reports"]) == [
        "a.safetensors", os.path.join("sub", "inside_link.safetensors")]
    assert [os.path.basename(s["path"]) for s in res["skipped"]] == ["link_out", "sneaky.safetensors"]
    summary = ui.scan_summary(res, False)
    assert "- skipped `link_out`: a link leading outside the model folders" in summary, summary
    assert "- skipped `sneaky.safetensors`" in summary and str(tree.outside) not in summary
    assert "skipped" not in ui.scan(loc, str(tree.models))   # a local scan follows every link, as before
    inside = ui.scan(ex, str(tree.models / "sub"))  # a link that stays inside is fine
    assert [os.path.basename(r["path"]) for r in inside["reports"]] == ["inside_link.safetensors"]
    # add as reference: refused outside and without the opt-in; fine locally
    msg = ui.add_reference(ex, str(tree.models / "a.safetensors"), "A")
    assert "adding a reference is refused" in msg and "FPCORE_EXPOSED_WRITES" in msg
    assert "outside the model folders" in ui.add_reference(ex, str(tree.outside / "secret.safetensors"), "S")
    assert "Added reference" in ui.add_reference(loc, str(tree.outside / "secret.safetensors"), "S")
    res = ui.scan(loc, str(tree.outside), write_tags=True)
    assert [os.path.basename(r["path"]) for r in res["reports"]] == ["secret.safetensors"]


def test_find_models_skips_what_leaves_the_allowed_roots(tree):
    from fpcore.scan import find_models
    os.symlink("/", tree.models / "sub" / "to_root")     # never walked when confined
    skipped: list = []
    files, errors = find_models(tree.models, [tree.models], skipped)
    assert [os.path.relpath(f, tree.models) for f in files] == [
        "a.safetensors", os.path.join("sub", "inside_link.safetensors")] and not errors
    assert sorted(os.path.relpath(s["path"], tree.models) for s in skipped) == [
        "link_out", "sneaky.safetensors", os.path.join("sub", "to_root")]
    # without allowed roots, links are followed (the CLI and a local UI): the outside file is found
    os.unlink(tree.models / "sub" / "to_root")
    everything = [os.path.relpath(f, tree.models) for f in find_models(tree.models)[0]]
    assert os.path.join("link_out", "secret.safetensors") in everything and "sneaky.safetensors" in everything


# -- URLs ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("url,why", [
    ("http://127.0.0.1/m.safetensors", "loopback"), ("http://127.8.9.1:8080/x", "loopback"),
    ("http://[::1]/x", "loopback"), ("http://10.1.2.3/x", "private"), ("https://192.168.1.20/x", "private"),
    ("http://172.16.0.1/x", "private"), ("http://169.254.169.254/latest/meta-data/", "metadata"),
    ("http://[fd00:ec2::254]/", "metadata"), ("http://0.0.0.0/x", "unspecified"),
    ("http://[::ffff:127.0.0.1]/x", "loopback"), ("http://100.100.100.200/", "metadata"),
    ("http://[fe80::1%25eth0]/x", "link-local"),
])
def test_check_url_refuses_internal_literals(url, why):
    with pytest.raises(ExposureError) as e:
        exposure.check_url(url, allow_private=False, resolver=lambda h, p: pytest.fail("literal resolved"))
    msg = str(e.value)
    assert why in msg and "FPCORE_ALLOW_PRIVATE_URLS=1" in msg and "\n" not in msg, msg
    exposure.check_url(url, allow_private=True)


def test_check_url_resolves_names_first():
    seen = []

    def resolver(answers):
        def r(host, port):
            seen.append((host, port))
            return answers
        return r
    exposure.check_url("https://models.example.org/a.safetensors", False, resolver(["93.184.215.14"]))
    assert seen[-1] == ("models.example.org", 443)
    # a public name that resolves (also) to an internal address: refused, naming both
    with pytest.raises(ExposureError, match=r"rebind\.example\.org \(10\.0\.0\.7\) is a private address"):
        exposure.check_url("http://rebind.example.org:8000/x", False, resolver(["93.184.215.14", "10.0.0.7"]))
    assert seen[-1] == ("rebind.example.org", 8000)
    with pytest.raises(ExposureError, match="localhost"):
        exposure.check_url("http://localhost/x", False, resolver(["127.0.0.1"]))

    def fails(host, port):
        raise OSError("Name or service not known")
    with pytest.raises(ExposureError, match="cannot be resolved"):
        exposure.check_url("http://nowhere.invalid/x", False, fails)


def test_check_url_redirect_chain_is_checked_each_hop():
    """What the remote reader does: the first URL and every redirect target."""
    chain = ["https://cdn.example.org/a", "http://169.254.169.254/latest/meta-data/"]
    res = {"cdn.example.org": ["93.184.215.14"]}
    exposure.check_url(chain[0], False, lambda h, p: res[h])
    with pytest.raises(ExposureError, match="metadata"):
        exposure.check_url(chain[1], False, lambda h, p: res[h])


@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://example.org/x", "http:///x", "http://[::1/x"])
def test_check_url_refuses_other_schemes_and_bad_urls(url):
    with pytest.raises(ExposureError):
        exposure.check_url(url, allow_private=True)


# -- host glue ------------------------------------------------------------------------------------

def load_webui_script(monkeypatch, argv, models_path):
    o = webui_parser().parse_args(argv)
    shared = types.SimpleNamespace(opts=types.SimpleNamespace(data={}), cmd_opts=o)
    sd_models = types.SimpleNamespace(model_path=os.path.join(models_path, "Stable-diffusion"), checkpoints_list={},
                                      checkpoint_aliases={}, model_data=None)
    modules = types.ModuleType("modules")
    subs = {"shared": shared, "sd_models": sd_models, "paths": types.SimpleNamespace(models_path=models_path),
            "script_callbacks": types.SimpleNamespace(on_ui_tabs=lambda f: None, on_ui_settings=lambda f: None,
                                                      on_model_loaded=lambda f: None)}
    for name, obj in subs.items():
        m = types.ModuleType(f"modules.{name}")
        m.__dict__.update(vars(obj))
        setattr(modules, name, m)
        monkeypatch.setitem(sys.modules, f"modules.{name}", m)
    monkeypatch.setitem(sys.modules, "modules", modules)
    monkeypatch.setitem(sys.modules, "gradio", types.ModuleType("gradio"))
    spec = importlib.util.spec_from_file_location("mfp_script_exposure", ROOT / "scripts" / "model_fingerprint.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_webui_glue_local_and_exposed(monkeypatch, tmp_path):
    monkeypatch.delenv("FPCORE_EXPOSED_WRITES", raising=False)
    models = tmp_path / "models"
    (models / "Stable-diffusion").mkdir(parents=True)
    mod = load_webui_script(monkeypatch, [], str(models))
    assert mod.HOST.exposure() is exposure.LOCAL
    extra = tmp_path / "ckpts"
    extra.mkdir()
    home = tmp_path / "a1111"
    mod = load_webui_script(monkeypatch, ["--listen", "--ckpt-dir", str(extra), "--forge-ref-a1111-home", str(home)],
                            str(models))
    p = mod.HOST.exposure()
    assert p.exposed and p.why == "--listen" and not p.allow_writes
    assert str(extra.resolve()) in p.roots and str((models / "Stable-diffusion").resolve()) in p.roots
    assert str((home / "models" / "Stable-diffusion").resolve()) in p.roots
    assert "--enable-insecure-extension-access" in p.write_setting
    with pytest.raises(ExposureError):
        exposure.confine(tmp_path / "elsewhere.safetensors", p)
    p = load_webui_script(monkeypatch, ["--share", "--enable-insecure-extension-access"], str(models)).HOST.exposure()
    assert p.exposed and p.allow_writes


PACK = "ComfyUI_custom_nodes_model_fingerprint_exposure_test"


def load_pack():
    """Import the project root as ComfyUI does: spec from <root>/__init__.py under a path-made name."""
    spec = importlib.util.spec_from_file_location(PACK, ROOT / "__init__.py", submodule_search_locations=[str(ROOT)])
    mod = importlib.util.module_from_spec(spec)
    sys.modules[PACK] = mod
    spec.loader.exec_module(mod)
    return mod


def test_comfy_glue_reads_listen(monkeypatch, tmp_path):
    ckpts = tmp_path / "checkpoints"
    ckpts.mkdir()
    fp = types.ModuleType("folder_paths")
    fp.get_folder_paths = lambda kind: [str(ckpts)] if kind == "checkpoints" else []
    fp.get_user_directory = lambda: str(tmp_path / "user")
    monkeypatch.setitem(sys.modules, "folder_paths", fp)
    comfy = types.ModuleType("comfy")
    cli_args = types.ModuleType("comfy.cli_args")
    comfy.cli_args = cli_args
    monkeypatch.setitem(sys.modules, "comfy", comfy)
    monkeypatch.setitem(sys.modules, "comfy.cli_args", cli_args)
    load_pack()
    nodes = sys.modules[PACK + ".nodes"]
    try:
        for argv, exposed in (([], False), (["--listen"], True), (["--listen", "10.0.0.2"], True),
                              (["--listen", "127.0.0.1"], False)):
            cli_args.args = comfy_parser().parse_args(argv)
            p = nodes.exposure_policy()
            assert p.exposed == exposed, argv
            if exposed:
                assert p.roots == (str(ckpts.resolve()),)
    finally:
        for k in [k for k in sys.modules if k.startswith(PACK)]:
            del sys.modules[k]
