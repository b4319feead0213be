"""The tag sidecar ``<model>.json`` (fpcore.tags), on hand-written reports: which keys are set,
what an unknown result may not overwrite, the merge into what is there, the one-time backup,
and the refusals. The host strings are A1111's and Forge's own ("SDXL", "SdVersion.SDXL")."""
from __future__ import annotations

import json
import os
import re

import pytest

from fpcore.scan import tags
from fpcore.errors import BadFileError
from fpcore.fingerprint import ALGO_VERSION


def report(family="sdxl", kind="checkpoint", relation="derivative", base="SDXL base 1.0", lineage=None, merge=None):
    return {"architecture": {"family": family, "kind": kind},
            "verdict": {"relation": relation, "base": base,
                        "lineage": ["SDXL base 1.0"] if lineage is None else lineage},
            "merge": merge or []}


MERGE = [{"ref": "Pony", "weight": 0.6, "lineage": ["SDXL base 1.0", "Pony"]},
         {"ref": "Illustrious", "weight": 0.4, "lineage": ["SDXL base 1.0", "Illustrious"]}]


def _model(tmp_path, name="m.safetensors"):
    p = tmp_path / name
    p.write_bytes(b"")
    return p


def _side(tmp_path, name="m.json"):
    return json.loads((tmp_path / name).read_text(encoding="utf-8"))


# -- what is set ----------------------------------------------------------------------------------
def test_checkpoint_tags():
    assert tags.tags_for(report()) == {"base_model": "SDXL base 1.0", "relation": "derivative",
                                       "lineage": ["SDXL base 1.0"], "fingerprint_version": ALGO_VERSION,
                                       "sd_version_str": "SdVersion.SDXL"}


@pytest.mark.parametrize("kind", ["lora", "lycoris"])
def test_lora_tags_carry_a1111s_sd_version(kind):
    t = tags.tags_for(report(family="sd1", kind=kind, relation="unknown", base=None, lineage=[]))
    assert t["sd version"] == "SD1" and "sd_version_str" not in t
    assert (t["base_model"], t["relation"], t["lineage"]) == (None, "unknown", [])


@pytest.mark.parametrize("family,a1111,forge", [("sd2", "SD2", "SdVersion.SD2"), ("flux", "Unknown", "SdVersion.Flux"),
                                                (None, "Unknown", "SdVersion.Unknown"),
                                                ("no_such_family", "Unknown", "SdVersion.Unknown")])
def test_sd_version_per_family(family, a1111, forge):
    assert tags.tags_for(report(family=family, kind="lora"))["sd version"] == a1111
    assert tags.tags_for(report(family=family))["sd_version_str"] == forge


def test_a_report_without_architecture_or_verdict():
    assert tags.tags_for({}) == {"base_model": None, "relation": None, "lineage": [],
                                 "fingerprint_version": ALGO_VERSION, "sd_version_str": "SdVersion.Unknown"}


def test_a_newer_merge_replaces_the_older_recipe(tmp_path):
    m = _model(tmp_path)
    tags.write(m, tags.tags_for(report(relation="merge", merge=MERGE)))
    newer = [dict(MERGE[0], weight=0.5), dict(MERGE[1], weight=0.5)]
    res = tags.write(m, tags.tags_for(report(relation="merge", merge=newer)))
    assert _side(tmp_path)["merge"] == newer and res["changes"]["merge"] == [MERGE, newer]
    assert _side(tmp_path)["base_model"] == "merge: Pony 50% + Illustrious 50%"


def test_merge_is_named_by_its_recipe_and_lists_its_members():
    t = tags.tags_for(report(relation="merge", base="SDXL base 1.0", merge=MERGE))
    assert t["base_model"] == "merge: Pony 60% + Illustrious 40%"
    assert t["relation"] == "merge" and t["merge"] == MERGE
    # a merge relation without a recipe keeps its base; a recipe on another relation is listed as is
    assert tags.tags_for(report(relation="merge", base="X"))["base_model"] == "X"
    assert tags.tags_for(report(relation="merge", base=None))["base_model"] is None
    t = tags.tags_for(report(relation="derivative", base="X", merge=MERGE))
    assert t["base_model"] == "X" and t["merge"] == MERGE


def test_sidecar_path_replaces_the_last_suffix(tmp_path):
    assert tags.sidecar_path(tmp_path / "a.b.safetensors") == tmp_path / "a.b.json"
    assert tags.sidecar_path("x/m.ckpt") == tags.Path("x/m.json")


# -- merging into what is there -------------------------------------------------------------------
def test_new_sidecar_is_written_with_every_key(tmp_path):
    m = _model(tmp_path)
    new = tags.tags_for(report())
    res = tags.write(m, new)
    assert res["path"] == str(tmp_path / "m.json")
    assert res["changes"] == {k: [None, v] for k, v in new.items()}
    assert _side(tmp_path) == new
    assert not (tmp_path / "m.json.bak").exists()                    # nothing to back up
    assert (tmp_path / "m.json").read_text(encoding="utf-8").endswith("}\n")


def test_users_keys_kept_and_original_backed_up_once(tmp_path):
    m = _model(tmp_path)
    original = '{"notes": "mine", "base_model": "old"}'
    (tmp_path / "m.json").write_text(original, encoding="utf-8")
    res = tags.write(m, {"base_model": "SDXL base 1.0", "relation": "derivative"})
    assert res["changes"] == {"base_model": ["old", "SDXL base 1.0"], "relation": [None, "derivative"]}
    assert _side(tmp_path) == {"notes": "mine", "base_model": "SDXL base 1.0", "relation": "derivative"}
    assert (tmp_path / "m.json.bak").read_text(encoding="utf-8") == original
    tags.write(m, {"base_model": "Pony", "relation": "derivative"})
    assert (tmp_path / "m.json.bak").read_text(encoding="utf-8") == original     # the first original only
    assert _side(tmp_path)["base_model"] == "Pony"


def test_nothing_changed_writes_nothing(tmp_path):
    m = _model(tmp_path)
    tags.write(m, {"base_model": "A"})
    before = (tmp_path / "m.json").stat().st_mtime_ns
    os.utime(tmp_path / "m.json", ns=(before - 10 ** 9, before - 10 ** 9))
    assert tags.write(m, {"base_model": "A"})["changes"] == {}
    assert (tmp_path / "m.json").stat().st_mtime_ns == before - 10 ** 9
    assert not (tmp_path / "m.json.bak").exists()
    assert tags.plan(m, {"base_model": "A"}) == {"path": str(tmp_path / "m.json"), "exists": True, "changes": {}}


def test_the_file_as_written(tmp_path):
    """Indented by four spaces, non-ASCII kept as text (UTF-8), a final newline."""
    m = _model(tmp_path)
    tags.write(m, {"base_model": "Anything 五", "relation": "derivative", "lineage": ["A"]})
    assert (tmp_path / "m.json").read_bytes() == (
        '{\n    "base_model": "Anything 五",\n    "relation": "derivative",\n    "lineage": [\n        "A"\n    ]\n}\n'
    ).encode("utf-8")


def test_plan_says_what_would_change_and_writes_nothing(tmp_path):
    m = _model(tmp_path)
    assert tags.plan(m, {"base_model": "A"}) == {"path": str(tmp_path / "m.json"), "exists": False,
                                                 "changes": {"base_model": [None, "A"]}}
    assert not (tmp_path / "m.json").exists()


@pytest.mark.parametrize("said", ["SDXL", "SdVersion.SDXL"])
def test_unknown_sd_version_never_replaces_a_set_one(tmp_path, said):
    m = _model(tmp_path)
    for key in tags.SD_VERSION_KEYS:
        (tmp_path / "m.json").write_text(json.dumps({key: said}), encoding="utf-8")
        for unknown in ("Unknown", "SdVersion.Unknown", None, ""):
            assert tags.plan(m, {key: unknown})["changes"] == {}
        assert tags.plan(m, {key: "SD1"})["changes"] == {key: [said, "SD1"]}      # a known one does
    # ... and an unknown one is written where nothing was set
    (tmp_path / "m.json").write_text(json.dumps({"sd version": "Unknown"}), encoding="utf-8")
    assert tags.plan(m, {"sd version": "SdVersion.Unknown"})["changes"] == {"sd version": ["Unknown",
                                                                                          "SdVersion.Unknown"]}


def test_unknown_verdict_never_replaces_a_known_one(tmp_path):
    m = _model(tmp_path)
    known = tags.tags_for(report(relation="merge", merge=MERGE))
    tags.write(m, known)
    unknown = tags.tags_for(report(relation="unknown", base=None, lineage=[]))
    res = tags.write(m, unknown)
    side = _side(tmp_path)
    for k in tags.VERDICT_KEYS:
        assert side[k] == known[k], k
    assert set(res["changes"]) <= {"fingerprint_version"}
    # a known result that is not a merge replaces the verdict and drops the stale merge list
    res = tags.write(m, tags.tags_for(report()))
    side = _side(tmp_path)
    assert "merge" not in side and res["changes"]["merge"] == [MERGE, None]
    assert (side["relation"], side["base_model"]) == ("derivative", "SDXL base 1.0")


@pytest.mark.parametrize("relation", [None, "", "unknown"])
def test_every_unsaid_relation_counts_as_unknown(tmp_path, relation):
    m = _model(tmp_path)
    (tmp_path / "m.json").write_text(json.dumps({"relation": "derivative", "base_model": "A", "lineage": ["A"],
                                                 "merge": MERGE}), encoding="utf-8")
    changes = tags.plan(m, {"relation": relation, "base_model": None, "lineage": [], "other": 1})["changes"]
    assert changes == {"other": [None, 1]}


def test_an_unsaid_old_value_is_replaced_by_an_unknown(tmp_path):
    m = _model(tmp_path)
    for old in (None, "", [], {}, "Unknown"):
        (tmp_path / "m.json").write_text(json.dumps({"base_model": old}), encoding="utf-8")
        changes = tags.plan(m, {"relation": "unknown", "base_model": "unknown"})["changes"]
        assert changes["base_model"] == [old, "unknown"], old


# -- refusals -------------------------------------------------------------------------------------
@pytest.mark.parametrize("content,why", [
    ("{not json", "existing sidecar is not valid JSON (JSONDecodeError); left untouched"),
    ("[1, 2]", "existing sidecar is not a JSON object; left untouched"),
    (b"\xff\xfe{}", "existing sidecar is not valid JSON (UnicodeDecodeError); left untouched"),
    ("[" * 100000, "existing sidecar is not valid JSON (RecursionError); left untouched")])
def test_sidecar_that_is_not_a_json_object_is_left_untouched(tmp_path, content, why):
    m = _model(tmp_path)
    sc = tmp_path / "m.json"
    sc.write_bytes(content if isinstance(content, bytes) else content.encode())
    before = sc.read_bytes()
    with pytest.raises(BadFileError) as e:
        tags.write(m, {"base_model": "A"})
    assert why in str(e.value) and str(sc) in str(e.value)
    assert str(e.value).replace(str(sc), "").strip(" :") == why
    with pytest.raises(BadFileError, match=re.escape(why)):
        tags.plan(m, {"base_model": "A"})
    assert sc.read_bytes() == before and not (tmp_path / "m.json.bak").exists()


def test_unwritable_folder_is_one_error_naming_the_sidecar(tmp_path, monkeypatch):
    m = _model(tmp_path)

    def refuse(path, data):
        raise PermissionError(13, "Permission denied")
    monkeypatch.setattr(tags, "atomic_write", refuse)
    with pytest.raises(BadFileError, match="cannot write sidecar: Permission denied") as e:
        tags.write(m, {"base_model": "A"})
    assert str(tmp_path / "m.json") in str(e.value)
