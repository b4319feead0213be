"""Claims, what changed and LoRA fits wherever a user sees a report: the CLI text and JSON, the
HTML scan report (a "claims" column where a contradiction stands out), the UI (report, scan
table, the LoRAs that fit the loaded checkpoint) and the ComfyUI LoRA Fit Check node (issue 25).

A small SD1 folder: ``tuned`` (a fine-tune of the registered Child) whose kohya metadata says it
was trained from Other, ``sib`` (a fine-tune of Other, Child's sibling), and a kohya LoRA whose
``ss_new_sd_model_hash`` is the SHA-256 of Child's file."""
from __future__ import annotations

import hashlib
import json
import sys
import types
from pathlib import Path

import pytest

import testkit
from fpcore import api, ui
from fpcore.cli import main
from test_comfy_glue import load_pack



@pytest.fixture(scope="module")
def folder(lineage, zoo_dir, tmp_path_factory):
    d = tmp_path_factory.mktemp("claims_hosts")
    testkit.write_safetensors(d / "tuned.safetensors", testkit.finetune(lineage["Child"], 0.05, 31), "F16",
                              metadata={"ss_sd_model_name": "Other.safetensors"})
    testkit.write_safetensors(d / "sib.safetensors", testkit.finetune(lineage["Other"], 0.05, 32), "F16")
    child_sha = hashlib.sha256((zoo_dir / "Child.safetensors").read_bytes()).hexdigest()
    testkit.write_safetensors(d / "style.safetensors", testkit.random_state_dict(testkit.extra_spec("lora_sd1"), 5),
                              "F16", metadata={"ss_new_sd_model_hash": child_sha, "ss_base_model_version": "sd_v1"})
    return d


def test_cli_identify_text_and_json(folder, db, capsys):
    assert main(["identify", str(folder / "tuned.safetensors"), "--refs", str(db.user_dir)]) == 0
    out = capsys.readouterr().out
    assert "claim contradicts: kohya says trained from Other.safetensors" in out
    assert "the weights descend from Child" in out
    assert "changed from Child: UNet only" in out
    assert main(["identify", str(folder / "tuned.safetensors"), "--refs", str(db.user_dir), "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)[0]
    assert rep["claim_check"] == "contradicts" and rep["claims"][0]["refers_to"] == "Other"
    assert rep["delta"]["base"] == "Child" and rep["health"]["counts"] == {"nan": 0, "inf": 0, "zero": 0}


def test_cli_scan_lists_what_each_lora_fits(folder, db, capsys):
    assert main(["scan", str(folder), "--refs", str(db.user_dir)]) == 0
    lines = capsys.readouterr().out.splitlines()
    style = lines.index(next(x for x in lines if x.startswith("style.safetensors")))
    block = "\n".join(lines[style:style + 4])
    assert "trained on: Child (Base → Child), by ss_new_sd_model_hash" in block
    assert "fits: tuned.safetensors" in block and "does not fit: sib.safetensors" in block
    assert any(x.startswith("tuned.safetensors") and x.endswith("| claims: contradicts") for x in lines)


def test_html_report_has_a_claims_column_where_a_contradiction_stands_out(folder, db, tmp_path):
    res = api.scan_folder(folder, db=db, use_cache=False)
    html = Path(api.write_report(res, tmp_path / "r.html", db=db)).read_text()
    assert "<th>claims</th>" in html
    row = next(r for r in html.split("<tr>") if r.startswith("<td>tuned.safetensors"))
    assert "<td class=contra><div class=claim-contradicts>contradicts: kohya says trained from Other.safetensors" in row
    sib = next(r for r in html.split("<tr>") if r.startswith("<td>sib.safetensors"))
    assert "class=contra" not in sib and "<span class=muted>none</span>" in sib
    assert "fits: tuned.safetensors" in html


def test_ui_report_table_and_scan_summary(folder, db):
    h = ui.StandaloneHost(folder, refs_dir=db.user_dir)
    rep = ui.identify_named(h, "tuned.safetensors")
    md = ui.format_report(rep)
    assert "- claims: **contradicts**" in md and "**CONTRADICTS**: kohya says *trained from Other.safetensors*" in md
    assert "changed from Child: UNet only" in md
    res = ui.scan(h, str(folder))
    rows = {r[0]: r for r in ui.table_rows(res, str(folder))}
    assert len(ui.TABLE_HEADERS) == len(rows["tuned.safetensors"]) and ui.TABLE_HEADERS[-1] == "claims"
    assert rows["tuned.safetensors"][-1].startswith("contradicts: kohya says trained from Other.safetensors")
    text = ui.scan_summary(res, False)
    assert "**1 file(s) contradict what they claim**: tuned.safetensors" in text
    assert "style.safetensors fits: tuned.safetensors" in text


def test_ui_lists_the_loras_that_fit_the_loaded_checkpoint(folder, db):
    h = ui.StandaloneHost(folder, refs_dir=db.user_dir)
    got = ui.loras_for(h, ui.identify_named(h, "tuned.safetensors"))
    assert [(r["lora"].rsplit("/", 1)[-1], r["fit"]) for r in got["rows"]] == [("style.safetensors", "yes")]
    assert ui.lora_rows(got["rows"], str(folder))[0][:2] == ["style.safetensors", "yes"]
    assert "**1** LoRA(s) fit **tuned.safetensors**" in got["message"]
    got = ui.loras_for(h, ui.identify_named(h, "sib.safetensors"))
    assert got["rows"][0]["fit"] == "no" and "trained on Child" in got["rows"][0]["reason"]
    assert ui.loras_for(h, {"error": "x"})["message"] == "Identify a checkpoint first."
    by_path = ui.loras_for_path(h, str(folder / "tuned.safetensors"))     # the UI's button: the shown file
    assert [r["fit"] for r in by_path["rows"]] == ["yes"]
    assert "local checkpoint" in ui.loras_for_path(h, "https://example.com/x.safetensors")["message"]


def _pack(tmp_path, monkeypatch, folder):
    """The ComfyUI pack with a fake folder_paths whose checkpoints and loras are ``folder``'s files."""
    fp = types.ModuleType("folder_paths")
    names = sorted(p.name for p in folder.iterdir() if p.suffix == ".safetensors")
    fp.get_filename_list = lambda kind: names
    fp.get_full_path = lambda kind, name: str(folder / name) if (folder / name).is_file() else None
    fp.get_user_directory = lambda: str(tmp_path / "user")
    monkeypatch.setitem(sys.modules, "folder_paths", fp)
    return load_pack("ComfyUI_custom_nodes_mfp_claims_under_test")


def test_comfy_lora_fit_node(folder, db, tmp_path, monkeypatch):
    monkeypatch.setenv("FPCORE_REFS", str(db.user_dir))
    node = _pack(tmp_path, monkeypatch, folder).NODE_CLASS_MAPPINGS["ModelFingerprintLoraFit"]
    assert node.RETURN_NAMES == ("status", "reason", "report_json")
    assert "model" in node.INPUT_TYPES()["optional"] and "lora_name" in node.INPUT_TYPES()["required"]
    status, reason, js = node().check("style.safetensors", "tuned.safetensors")["result"]
    assert status == "ok" and "descends from Child" in reason and json.loads(js)["fit"] == "yes"
    out = node().check("style.safetensors", "sib.safetensors")
    assert out["result"][0] == "warn" and out["ui"]["text"][0].startswith("warn: trained on Child")
    # a MODEL wired in: ComfyUI records the file it was loaded from
    model = types.SimpleNamespace(model=None, patches={}, cached_patcher_init=(None, (str(folder / "tuned.safetensors"),)))
    assert node().check("style.safetensors", "(the MODEL input)", model=model)["result"][0] == "ok"
    assert node().check("tuned.safetensors", "sib.safetensors")["result"][0] == "warn"     # not a LoRA
    assert node().check("style.safetensors", "(the MODEL input)")["result"][0] == "warn"    # nothing wired in


def test_weights_in_memory_have_no_sidecar_claims(lineage, db):
    from fpcore.identify import identify_tensors
    rep = identify_tensors(lineage["Child"], db)
    assert rep["claims"] == [] and rep["claim_check"] is None and rep["health"]["tensors"] > 0
