"""A file of an architecture the rule table does not know (issue 13), without torch.

The layout is a BERT's (transformers' BertModel keys, as in all-MiniLM-L6-v2's
model.safetensors, at reduced width): bare keys ``embeddings.*``, ``encoder.*`` and
``pooler.*`` that partly match other families' key lists (``pooler`` is in the DiT list,
``encoder.*`` looks like a VAE's). Training changes everything but the pooler, as a real
fine-tune with a mean-pooling objective does. Such a file was called ``same_weights`` as its
base with confidence 1.0, the verdict resting on the pooler's few sampled values.
"""
from __future__ import annotations

import numpy as np
import pytest
from safetensors.numpy import save_file

import testkit
from fpcore import api
from testkit import bert

SPEC = bert.bert_spec(hidden=128, layers=4, ffn=512, vocab=4000, positions=128)


def _random(seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    out = {}
    for k, shape in SPEC.items():
        if k.endswith("position_ids"):
            out[k] = np.arange(shape[1], dtype=np.int64)[None]
        elif k.endswith("LayerNorm.weight"):
            out[k] = (1 + 0.05 * rng.standard_normal(shape)).astype(np.float32)
        elif len(shape) == 1:
            out[k] = (0.02 * rng.standard_normal(shape)).astype(np.float32)
        else:
            out[k] = (0.04 * rng.standard_normal(shape)).astype(np.float32)
    return out


def _trained(sd: dict, rel: float, seed: int) -> dict:
    """Every float tensor but the pooler's moved by ``rel`` of its RMS (the pooler untouched)."""
    rng = np.random.default_rng(seed)
    out = {}
    for k, w in sd.items():
        if k.startswith("pooler.") or not np.issubdtype(w.dtype, np.floating):
            out[k] = w
            continue
        d = rng.standard_normal(w.shape).astype(np.float32)
        out[k] = w + d * (rel * float(np.sqrt(np.mean(w * w))) / float(np.sqrt(np.mean(d * d))))
    return out


def _save(path, sd, dtype=np.float32):
    save_file({k: (v.astype(dtype) if np.issubdtype(v.dtype, np.floating) else v) for k, v in sd.items()}, str(path))
    return path


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    d = tmp_path_factory.mktemp("bert")
    base = _random(1)
    refs = d / "refs"
    api.add_reference(_save(d / "base.safetensors", base), "BertBase", refs_dir=refs)
    return d, base, refs


def _identify(path, refs) -> dict:
    rep = api.identify_file(path, refs_dir=refs, hashes=False, use_cache=False)
    assert rep.get("error") is None, rep.get("error")
    return rep


@pytest.mark.parametrize("rel", [0.10, 0.012])
def test_trained_except_the_pooler_is_never_same_weights(setup, rel):
    d, base, refs = setup
    rep = _identify(_save(d / f"ft_{rel}.safetensors", _trained(base, rel, 7)), refs)
    v = rep["verdict"]
    assert v["relation"] != "same_weights", v
    assert v["relation"] == "derivative" and v["base"] == "BertBase", v
    for comp in (rep.get("components") or {}).values():      # no component may claim it either
        assert comp.get("relation") != "same_weights", rep["components"]


def test_fp16_copy_is_same_weights(setup):
    """The other side: the comparison works on this layout, so the test above can fail."""
    d, base, refs = setup
    rep = _identify(_save(d / "base16.safetensors", base, np.float16), refs)
    assert rep["verdict"]["relation"] == "same_weights" and rep["verdict"]["base"] == "BertBase", rep["verdict"]


def test_independent_model_is_unknown(setup):
    d, _, refs = setup
    rep = _identify(_save(d / "other.safetensors", _random(2)), refs)
    assert rep["verdict"]["relation"] == "unknown", rep["verdict"]


def test_bare_keys_stay_one_component(setup):
    """No container prefix: one component, whatever the bare names resemble (encoder.* is no
    VAE, pooler.* no DiT), described by what is known of it (issue 24)."""
    d, _, refs = setup
    rep = _identify(d / "base.safetensors", refs)
    a = rep["architecture"]
    assert a["family"] == "unknown" and a["components"] == ["model"] and list(rep["components"]) == ["model"]
    n = testkit.param_count(SPEC)           # the generator's count (integer position_ids left out)
    assert 1e6 <= n < 1e8
    assert a["layout_name"] == f"unrecognised layout, {n / 1e6:.1f} M parameters, bare keys, one component"
    assert a["layout"]["containers"] == {} and a["layout"]["params"] == n
