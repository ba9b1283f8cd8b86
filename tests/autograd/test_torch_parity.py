"""Composite expressions that a language model computes, against PyTorch in float64.

Each case below is one piece of a language model (a GELU MLP, a layer norm, causal
attention with grouped key/value heads, a tied LM head with cross-entropy, ...) written
twice: once with autograd's primitives, once with PyTorch's own layers where it has them
(F.layer_norm, F.scaled_dot_product_attention, F.cross_entropy, ...). Forward values and the
gradients of every leaf must agree. Together the cases reach every primitive in REGISTRY;
a test walks their graphs to make sure, so a new primitive cannot go unchecked. The tests
at the end pin engine bugs once found here (now fixed) as regression tests.

Inputs are drawn by hypothesis in [-3, 3] and include exact ties and zeros, so the tie rules
(max, maximum, minimum, clip, relu, abs) are compared with PyTorch's as well.
"""

import math
from collections.abc import Callable
from typing import NamedTuple

import numpy as np
import pytest
from hypothesis import given, note, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import autograd as ag
import npplm  # (also registers the primitives that npplm's layers define)
from autograd import REGISTRY, Tensor
from autograd.graph import toposort
from npplm.layers import grad_scale
from npplm.layers.dropout import dropout_with_mask
from npplm.layers.embedding import embedding
from tests.autograd.strategies import array
from tests.tolerances import assert_close

torch = pytest.importorskip("torch")
F = torch.nn.functional


class Case(NamedTuple):
    leaves: dict  # name -> float64 array: differentiated in both libraries
    constants: dict  # name -> array (ids, targets, masks, labels): not differentiated
    ours: Callable  # (**leaves, **constants) as autograd Tensors / arrays -> Tensor
    theirs: Callable  # the same with torch tensors -> torch tensor


def sizes(draw, *names, lo=1, hi=3):
    return [draw(st.integers(lo, hi), label=n) for n in names]


# --- feed-forward blocks -----------------------------------------------------------------


def gelu_erf(x):
    """GELU, exact form (BERT, GPT-2's paper): 0.5 x (1 + erf(x / sqrt 2))."""
    return 0.5 * x * (1.0 + ag.erf(x / math.sqrt(2.0)))


def gelu_tanh(x):
    """GELU, tanh approximation (GPT-2's code): 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))."""
    return 0.5 * x * (1.0 + ag.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))


@st.composite
def gelu_mlp_with_dropout(draw):
    # (B, T, C) @ (C, F) -> GELU -> dropout -> (B, T, F) @ (F, C)
    b, t, c, f = sizes(draw, "B", "T", "C", "F")
    p = draw(st.sampled_from([0.1, 0.5]), label="p")
    leaves = dict(x=array(draw, (b, t, c)), w1=array(draw, (c, f)), b1=array(draw, (f,)),
                  w2=array(draw, (f, c)), b2=array(draw, (c,)))
    keep = draw(hnp.arrays(np.bool_, (b, t, f)), label="keep")

    def ours(x, w1, b1, w2, b2, keep):
        h = dropout_with_mask(gelu_erf(x @ w1 + b1), keep, p=p)
        return h @ w2 + b2

    def theirs(x, w1, b1, w2, b2, keep):
        h = F.gelu(x @ w1 + b1) * keep / (1 - p)  # torch's dropout, given our mask
        return h @ w2 + b2

    return Case(leaves, dict(keep=keep), ours, theirs)


@st.composite
def gelu_tanh_mlp(draw):
    b, t, c, f = sizes(draw, "B", "T", "C", "F")
    leaves = dict(x=array(draw, (b, t, c)), w1=array(draw, (c, f)), w2=array(draw, (f, c)))

    def ours(x, w1, w2):
        return gelu_tanh(x @ w1) @ w2

    def theirs(x, w1, w2):
        return F.gelu(x @ w1, approximate="tanh") @ w2

    return Case(leaves, {}, ours, theirs)


@st.composite
def swiglu_ffn(draw):
    # LLaMA: (silu(x W_gate) * (x W_up)) W_down, with silu(z) = z sigmoid(z)
    b, t, c, f = sizes(draw, "B", "T", "C", "F")
    leaves = dict(x=array(draw, (b, t, c)), w_gate=array(draw, (c, f)),
                  w_up=array(draw, (c, f)), w_down=array(draw, (f, c)))

    def ours(x, w_gate, w_up, w_down):
        gate = x @ w_gate
        return (gate * ag.sigmoid(gate) * (x @ w_up)) @ w_down

    def theirs(x, w_gate, w_up, w_down):
        return (F.silu(x @ w_gate) * (x @ w_up)) @ w_down

    return Case(leaves, {}, ours, theirs)


@st.composite
def relu_ffn_with_clamp(draw):
    # T5: relu(x W_i) W_o, then hidden states clamped to a finite range (its fp16 guard)
    b, t, c, f = sizes(draw, "B", "T", "C", "F")
    bound = draw(st.sampled_from([0.5, 4.0]), label="bound")
    leaves = dict(x=array(draw, (b, t, c)), wi=array(draw, (c, f)), wo=array(draw, (f, c)))

    def ours(x, wi, wo):
        return ag.clip(ag.relu(x @ wi) @ wo, lo=-bound, hi=bound)

    def theirs(x, wi, wo):
        return torch.clamp(F.relu(x @ wi) @ wo, -bound, bound)

    return Case(leaves, {}, ours, theirs)


# --- normalisation -----------------------------------------------------------------------


@st.composite
def layer_norm(draw):
    # (x - mean) / sqrt(var + eps) * gamma + beta over the last axis
    b, t = sizes(draw, "B", "T")
    (c,) = sizes(draw, "C", lo=2, hi=4)
    leaves = dict(x=array(draw, (b, t, c)), gamma=array(draw, (c,)), beta=array(draw, (c,)))

    def ours(x, gamma, beta):
        mean = x.mean(axis=-1, keepdims=True)
        var = x.var(axis=-1, keepdims=True)
        return (x - mean) / ag.sqrt(var + 1e-5) * gamma + beta

    def theirs(x, gamma, beta):
        return F.layer_norm(x, (c,), gamma, beta, eps=1e-5)

    return Case(leaves, {}, ours, theirs)


@st.composite
def rms_norm(draw):
    # LLaMA, T5: x / sqrt(mean(x^2) + eps) * w
    b, t, c = sizes(draw, "B", "T", "C")
    leaves = dict(x=array(draw, (b, t, c)), w=array(draw, (c,)))

    def ours(x, w):
        return x * (ag.mean(x**2, axis=-1, keepdims=True) + 1e-6) ** -0.5 * w

    def theirs(x, w):
        return F.rms_norm(x, (c,), w, eps=1e-6)

    return Case(leaves, {}, ours, theirs)


@st.composite
def fused_layers_block(draw):
    # npplm.layers' fused primitives: LayerNorm -> GELU / GELU-tanh / SiLU branches -> RMSNorm
    b, t = sizes(draw, "B", "T")
    (c,) = sizes(draw, "C", lo=2, hi=4)
    leaves = dict(x=array(draw, (b, t, c)), gamma=array(draw, (c,)), beta=array(draw, (c,)),
                  w1=array(draw, (c, c)), w2=array(draw, (c, c)), w3=array(draw, (c, c)),
                  w=array(draw, (c,)), b1=array(draw, (c,)))

    def ours(x, gamma, beta, w1, w2, w3, w, b1):
        h = npplm.layers.layer_norm(x, gamma, beta, eps=1e-5)
        h = (npplm.layers.gelu(npplm.layers.linear(h, w1, b1)) + npplm.layers.gelu_tanh(h @ w2)
             + npplm.layers.silu(h @ w3))
        return npplm.layers.rms_norm(h, w, eps=1e-6)

    def theirs(x, gamma, beta, w1, w2, w3, w, b1):
        h = F.layer_norm(x, (c,), gamma, beta, eps=1e-5)
        h = F.gelu(F.linear(h, w1, b1)) + F.gelu(h @ w2, approximate="tanh") + F.silu(h @ w3)
        return F.rms_norm(h, (c,), w, eps=1e-6)

    return Case(leaves, {}, ours, theirs)


@st.composite
def quantized_projection(draw):
    # A frozen block-quantised weight (npplm.quantization): x W^T + b with W's 4-bit codes
    # and scales, against torch's linear with W dequantised; gradients of x and b only.
    from npplm.quantization.linear import PackedWeight, dequantize_reference, quantized_linear

    b, t = sizes(draw, "B", "T")
    (n_out,) = sizes(draw, "R", lo=1, hi=5)
    rng = np.random.default_rng(draw(st.integers(0, 2**31)))
    q = rng.integers(0, 16, (n_out, 32)).astype(np.int8)
    scale = (rng.random((n_out, 1)) * 0.2).astype(np.float16).astype(np.float32)
    offset = (rng.standard_normal((n_out, 1)) * 0.1).astype(np.float32)
    packed = PackedWeight.pack("Q4_1", q, scale, offset, 32)
    w = dequantize_reference(packed).astype(np.float64)
    leaves = dict(x=array(draw, (b, t, 32)), bias=array(draw, (n_out,)))

    def ours(x, bias):
        return ag.tanh(quantized_linear(x, bias, weight=packed))

    def theirs(x, bias):
        return torch.tanh(F.linear(x, torch.from_numpy(w), bias))

    return Case(leaves, {}, ours, theirs)


# --- attention -----------------------------------------------------------------------------


@st.composite
def causal_attention(draw):
    # GPT-2's c_attn/c_proj with grouped key/value heads: H = K * G query heads share K
    # key/value heads (K = 1 is multi-query attention, G = 1 is ordinary multi-head).
    b, k_heads, g, d = sizes(draw, "B", "K", "G", "D", hi=2)
    (t,) = sizes(draw, "T", hi=4)
    h = k_heads * g
    c = h * d
    leaves = dict(x=array(draw, (b, t, c)), w_attn=array(draw, (c, c + 2 * k_heads * d)),
                  w_proj=array(draw, (c, c)))

    def ours(x, w_attn, w_proj):
        qkv = x @ w_attn  # (B, T, C) @ (C, C + 2KD) -> (B, T, C + 2KD)
        q, k, v = ag.split(qkv, sections=[c, c + k_heads * d], axis=-1)
        q = q.reshape(b, t, k_heads, g, d).transpose(0, 2, 3, 1, 4)  # -> (B, K, G, T, D)
        k = ag.expand_dims(k.reshape(b, t, k_heads, d).transpose(0, 2, 1, 3), axis=2)
        v = ag.expand_dims(v.reshape(b, t, k_heads, d).transpose(0, 2, 1, 3), axis=2)
        # (B, K, G, T, D) @ (B, K, 1, D, S) -> (B, K, G, T, S): batch-broadcast over G
        scores = q @ k.swapaxes(-1, -2) / math.sqrt(d)
        causal = np.tril(np.ones((t, t), dtype=bool))  # (T, S): key s <= query t
        probs = npplm.layers.softmax(ag.where(causal, scores, -math.inf), axis=-1)
        y = probs @ v  # (B, K, G, T, S) @ (B, K, 1, S, D) -> (B, K, G, T, D)
        y = y.transpose(0, 3, 1, 2, 4).reshape(b, t, c)  # -> (B, T, K, G, D) -> (B, T, C)
        return y @ w_proj

    def theirs(x, w_attn, w_proj):
        q, k, v = (x @ w_attn).split([c, k_heads * d, k_heads * d], dim=-1)
        q = q.reshape(b, t, h, d).transpose(1, 2)  # (B, H, T, D)
        k = k.reshape(b, t, k_heads, d).transpose(1, 2)  # (B, K, S, D)
        v = v.reshape(b, t, k_heads, d).transpose(1, 2)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
        return y.transpose(1, 2).reshape(b, t, c) @ w_proj

    return Case(leaves, {}, ours, theirs)


@st.composite
def causal_attention_with_padding(draw):
    # npplm.layers.attention with a CausalMask (GPT-2's and LLaMA's path: one fused
    # primitive) against SDPA with the same boolean mask: causal after S - T cached keys,
    # padding keys dropped. Key 0 is kept, so every query row reads at least one key.
    b, h, d = sizes(draw, "B", "H", "D", hi=2)
    (t,) = sizes(draw, "T", hi=4)
    s = t + draw(st.integers(0, 2), label="cached")
    keep = draw(hnp.arrays(np.bool_, (b, s)), label="keep")
    keep[:, 0] = True
    leaves = dict(q=array(draw, (b, h, t, d)), k=array(draw, (b, h, s, d)),
                  v=array(draw, (b, h, s, d)))
    allowed = np.tril(np.ones((t, s), dtype=bool), k=s - t) & keep[:, None, None, :]

    def ours(q, k, v, keep, allowed):
        return npplm.layers.attention(q, k, v, bias=npplm.layers.CausalMask(keep))

    def theirs(q, k, v, keep, allowed):
        return F.scaled_dot_product_attention(q, k, v, attn_mask=allowed)  # (B, 1, T, S)

    return Case(leaves, dict(keep=keep, allowed=allowed), ours, theirs)


@st.composite
def rotary_scores(draw):
    # LLaMA's RoPE on q and k (one fused primitive), then the scores q k^T, against
    # Hugging Face's formula written in torch (x cos + rotate_half(x) sin). Tables (T, D)
    # for every sequence, or (B, T, D) as for a left-padded batch; positions up to 10^4.
    b, h, half = sizes(draw, "B", "H", "D/2", hi=3)
    (t,) = sizes(draw, "T", hi=4)
    d = 2 * half
    per_sequence = draw(st.booleans(), label="per-sequence tables")
    positions = np.asarray(draw(hnp.arrays(np.int64, (b, t) if per_sequence else (t,),
                                           elements=st.integers(0, 10_000)),
                                label="positions"))
    cos, sin = npplm.layers.rope_cos_sin(positions, npplm.layers.rope_frequencies(d),
                                         np.float64)
    leaves = dict(q=array(draw, (b, h, t, d)), k=array(draw, (b, h, t, d)))

    def ours(q, k, cos, sin):
        q, k = npplm.layers.apply_rotary(q, cos, sin), npplm.layers.apply_rotary(k, cos, sin)
        return q @ k.swapaxes(-1, -2)  # (B, H, T, D) @ (B, H, D, T) -> (B, H, T, T)

    def theirs(q, k, cos, sin):
        if cos.ndim == 3:  # (B, T, D) -> (B, 1, T, D)
            cos, sin = cos[:, None], sin[:, None]

        def rotate_half(x):
            return torch.cat([-x[..., half:], x[..., :half]], dim=-1)

        q, k = q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin
        return q @ k.transpose(-1, -2)

    return Case(leaves, dict(cos=cos, sin=sin), ours, theirs)


# --- embeddings and language-model losses ------------------------------------------------


@st.composite
def tied_lm_head_cross_entropy(draw):
    # GPT-2: token + position embeddings, the output head reuses the token embedding (so
    # wte gets gradient from both uses), cross-entropy over the vocabulary (last axis).
    b, c = sizes(draw, "B", "C")
    t, v = sizes(draw, "T", "V", lo=2, hi=4)
    n_positions = t + draw(st.integers(0, 2), label="extra positions")
    ids = draw(hnp.arrays(np.int64, (b, t), elements=st.integers(0, v - 1)), label="ids")
    ids[:, -1] = ids[:, 0]  # a repeated id: its embedding gradients must add up
    ignore_index = draw(st.sampled_from([-100, 0]), label="ignore_index")
    targets = draw(hnp.arrays(np.int64, (b, t), elements=st.integers(0, v - 1)))
    ignored = draw(hnp.arrays(np.bool_, (b, t)), label="ignored")
    targets = np.where(ignored, ignore_index, targets)
    targets[0, 0] = 1  # at least one counted position (1 is a class, never ignore_index)
    smoothing = draw(st.sampled_from([0.0, 0.1]), label="label_smoothing")
    reduction = draw(st.sampled_from(["mean", "sum", "none"]), label="reduction")
    leaves = dict(wte=array(draw, (v, c)), wpe=array(draw, (n_positions, c)))
    kw = dict(ignore_index=ignore_index, label_smoothing=smoothing, reduction=reduction)

    def ours(wte, wpe, ids, targets):
        h = wte[ids] + wpe[:t]  # (B, T, C)
        logits = h @ wte.T  # (B, T, C) @ (C, V) -> (B, T, V)
        return npplm.layers.cross_entropy(logits, targets, **kw)

    def theirs(wte, wpe, ids, targets):
        h = F.embedding(ids, wte) + wpe[:t]
        logits = h @ wte.T
        loss = F.cross_entropy(logits.reshape(-1, v), targets.reshape(-1), **kw)  # (N, C)
        return loss.reshape(b, t) if reduction == "none" else loss

    return Case(leaves, dict(ids=ids, targets=targets), ours, theirs)


@st.composite
def binary_cross_entropy_with_logits(draw):
    # ELECTRA's replaced-token detection: one logit per token, (soft) labels in [0, 1].
    # max(z, 0) - z y + log(1 + exp(-|z|)) never overflows.
    b, t, c = sizes(draw, "B", "T", "C")
    leaves = dict(h=array(draw, (b, t, c)), w=array(draw, (c,)), bias=array(draw, ()),
                  y=array(draw, (b, t), 0.0, 1.0))

    def ours(h, w, bias, y):
        z = h @ w + bias  # (B, T, C) @ (C,) -> (B, T)
        return (ag.maximum(z, 0.0) - z * y + ag.log(1.0 + ag.exp(-ag.abs(z)))).mean()

    def theirs(h, w, bias, y):
        return F.binary_cross_entropy_with_logits(h @ w + bias, y)

    return Case(leaves, {}, ours, theirs)


@st.composite
def ppo_clipped_objective(draw):
    # RLHF: the policy's log-probability of each sampled token, the probability ratio to
    # the old policy, and PPO's pessimistic clipped objective.
    n, v = sizes(draw, "N", "V", lo=1, hi=4)
    actions = draw(hnp.arrays(np.int64, (n,), elements=st.integers(0, v - 1)))
    constants = dict(actions=actions, old_logp=array(draw, (n,), -4.0, 0.0),
                     advantage=array(draw, (n,), -2.0, 2.0))

    def ours(logits, actions, old_logp, advantage):
        logp = npplm.layers.log_softmax(logits)[np.arange(n), actions]  # (N, V) -> (N,)
        ratio = ag.exp(logp - old_logp)
        clipped = ag.clip(ratio, lo=0.8, hi=1.2)
        return -ag.minimum(ratio * advantage, clipped * advantage).mean()

    def theirs(logits, actions, old_logp, advantage):
        logp = F.log_softmax(logits, dim=-1).gather(-1, actions[:, None])[:, 0]
        ratio = torch.exp(logp - old_logp)
        clipped = torch.clamp(ratio, 0.8, 1.2)
        return -torch.minimum(ratio * advantage, clipped * advantage).mean()

    return Case(dict(logits=array(draw, (n, v))), constants, ours, theirs)


# --- pooling, mixing and sequence plumbing -----------------------------------------------


@st.composite
def pooled_classifier(draw):
    # A sequence-classification head over four poolings of (B, T, C): max, logsumexp,
    # mean and the first ([CLS]) token, run through a float32 round trip as under autocast.
    b, t, c, n = sizes(draw, "B", "T", "C", "N")
    leaves = dict(h=array(draw, (b, t, c)), w=array(draw, (4 * c, n)), bias=array(draw, (n,)))

    def ours(h, w, bias):
        cls = ag.squeeze(h[:, :1], axis=1)  # (B, 1, C) -> (B, C)
        pooled = ag.concatenate(h.max(axis=1), ag.logsumexp(h, axis=1), h.mean(axis=1), cls,
                                axis=-1)  # (B, 4C)
        return pooled.astype(np.float32).astype(np.float64) @ w + bias

    def theirs(h, w, bias):
        pooled = torch.cat([torch.amax(h, dim=1), torch.logsumexp(h, dim=1), h.mean(dim=1),
                            h[:, 0]], dim=-1)
        return pooled.float().double() @ w + bias

    return Case(leaves, {}, ours, theirs)


@st.composite
def scalar_mix_token_shift_and_cls(draw):
    # ELMo's scalar mix of L layers (softmax weights, a scale), RWKV's token shift (each
    # position blends in the previous one, zeros before the first), and a learned [CLS]
    # vector prepended to every sequence.
    b, t, c, n_layers = sizes(draw, "B", "T", "C", "L")
    layers = {f"h{i}": array(draw, (b, t, c)) for i in range(n_layers)}
    leaves = dict(s=array(draw, (n_layers,)), gamma=array(draw, ()), mu=array(draw, (c,)),
                  cls=array(draw, (c,)), **layers)

    def ours(s, gamma, mu, cls, **layers):
        weights = npplm.layers.softmax(s, axis=0).reshape(n_layers, 1, 1, 1)
        stacked = ag.stack(*layers.values(), axis=0)  # (L, B, T, C)
        mixed = (stacked * weights).sum(axis=0) * gamma  # (B, T, C)
        previous = ag.pad(mixed, pad_width=((0, 0), (1, 0), (0, 0)))[:, :-1]  # (B, T, C)
        mixed = mixed * mu + previous * (1.0 - mu)
        cls = ag.broadcast_to(cls, shape=(b, 1, c))
        return ag.concatenate(cls, mixed, axis=1)  # (B, 1 + T, C)

    def theirs(s, gamma, mu, cls, **layers):
        weights = torch.softmax(s, dim=0).reshape(n_layers, 1, 1, 1)
        mixed = (torch.stack(list(layers.values())) * weights).sum(dim=0) * gamma
        previous = F.pad(mixed, (0, 0, 1, 0))[:, :-1]  # F.pad lists the last axis first
        mixed = mixed * mu + previous * (1.0 - mu)
        return torch.cat([cls.expand(b, 1, c), mixed], dim=1)

    return Case(leaves, {}, ours, theirs)


@st.composite
def generalized_mean_pooling(draw):
    # GeM pooling over time with a learned exponent p: mean(max(h, eps)^p)^(1/p), which
    # differentiates pow with respect to its exponent too.
    b, t, c = sizes(draw, "B", "T", "C")
    leaves = dict(h=array(draw, (b, t, c)), p=array(draw, (), 1.0, 4.0))

    def ours(h, p):
        return (ag.clip(h, lo=1e-6) ** p).mean(axis=1) ** (1.0 / p)

    def theirs(h, p):
        return torch.clamp(h, min=1e-6).pow(p).mean(dim=1).pow(1.0 / p)

    return Case(leaves, {}, ours, theirs)


@st.composite
def shrunk_embedding_lookup(draw):
    # GLM-130B's embedding gradient shrink: the lookup's value unchanged, its gradient
    # times alpha; torch spells it with detach (arXiv:2210.02414, section 3).
    b, c = sizes(draw, "B", "C")
    t, v = sizes(draw, "T", "V", lo=2, hi=4)
    ids = draw(hnp.arrays(np.int64, (b, t), elements=st.integers(0, v - 1)), label="ids")
    alpha = draw(st.sampled_from([0.1, 0.5, 1.0]), label="alpha")
    leaves = dict(wte=array(draw, (v, c)), w=array(draw, (c, c)))

    def ours(wte, w, ids):  # npplm.layers.embedding: the lookup primitive Embedding uses
        return ag.tanh(grad_scale(embedding(wte, ids), alpha=alpha) @ w)  # (B, T, C)

    def theirs(wte, w, ids):
        e = F.embedding(ids, wte)
        return torch.tanh((e * alpha + (e - e * alpha).detach()) @ w)

    return Case(leaves, dict(ids=ids), ours, theirs)


CASES = {
    s.__name__: s()
    for s in (gelu_mlp_with_dropout, gelu_tanh_mlp, swiglu_ffn, relu_ffn_with_clamp,
              layer_norm, rms_norm, causal_attention, causal_attention_with_padding,
              rotary_scores,
              tied_lm_head_cross_entropy,
              binary_cross_entropy_with_logits, ppo_clipped_objective, pooled_classifier,
              scalar_mix_token_shift_and_cls, generalized_mean_pooling, fused_layers_block,
              shrunk_embedding_lookup, quantized_projection)
}


def torch_forward_and_backward(case, cotangent):
    leaves = {k: torch.tensor(a, requires_grad=True) for k, a in case.leaves.items()}
    constants = {k: torch.from_numpy(a) for k, a in case.constants.items()}
    out = case.theirs(**leaves, **constants)
    out.backward(torch.from_numpy(cotangent))
    return out.detach().numpy(), {k: leaf.grad.numpy() for k, leaf in leaves.items()}


@pytest.mark.parametrize("name", sorted(CASES))
@given(data=st.data())
def test_forward_and_gradients_match_torch(name, data):
    case = data.draw(CASES[name], label="case")
    leaves = {k: Tensor(a.copy(), requires_grad=True) for k, a in case.leaves.items()}
    out = case.ours(**leaves, **case.constants)
    seed = data.draw(st.integers(0, 2**32 - 1), label="cotangent seed")
    cotangent = np.random.default_rng(seed).standard_normal(out.shape)
    out.backward(cotangent)
    expected, expected_grads = torch_forward_and_backward(case, cotangent)
    assert out.dtype == np.float64
    assert_close(out, expected, kind="float64")
    for k, leaf in leaves.items():
        note(f"gradient of {k}")
        assert leaf.grad is not None, f"{name}: no gradient reached {k}"
        assert_close(leaf.grad, expected_grads[k], kind="float64")


@settings(max_examples=1)
@given(data=st.data())
def test_the_cases_exercise_every_registered_primitive(data):
    seen = set()
    for name, strategy in CASES.items():
        case = data.draw(strategy, label=name)
        leaves = {k: Tensor(a, requires_grad=True) for k, a in case.leaves.items()}
        out = case.ours(**leaves, **case.constants)
        seen |= {node.primitive.name for node in toposort(out._node)}
    missing = sorted(set(REGISTRY) - seen)
    assert not missing, f"primitives that no parity case differentiates through: {missing}"


# --- regressions: engine bugs found by comparing with PyTorch, fixed ---------------------


def test_vector_dot_vector_matches_torch():
    # Cosine similarity of two embeddings, as in retrieval and contrastive heads.
    rng = np.random.default_rng(0)
    u, v = rng.standard_normal(4), rng.standard_normal(4)
    tu, tv = (Tensor(a, requires_grad=True) for a in (u, v))
    out = (tu @ tv) / (ag.sqrt(tu @ tu) * ag.sqrt(tv @ tv))
    out.backward()
    su, sv = (torch.tensor(a, requires_grad=True) for a in (u, v))
    expected = (su @ sv) / (torch.sqrt(su @ su) * torch.sqrt(sv @ sv))
    expected.backward()
    assert_close(out, expected.detach().numpy(), kind="float64")
    assert_close(tu.grad, su.grad.numpy(), kind="float64")
    assert_close(tv.grad, sv.grad.numpy(), kind="float64")


@pytest.mark.parametrize("dtype, kind, grad_kind", [(np.float64, "float64", "float64"),
                                                    (np.float32, "float32", "grad")])
def test_log_sigmoid_in_the_left_tail_matches_torch(dtype, kind, grad_kind):
    # DPO's loss, -log(sigmoid(beta * margin)), for preference pairs ranked badly wrong.
    margin = np.linspace(-60.0, -10.0, 11).astype(dtype)
    x = Tensor(margin, requires_grad=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        loss = -ag.log(ag.sigmoid(x))
        loss.sum().backward()
    t = torch.tensor(margin, requires_grad=True)
    expected = -torch.log(torch.sigmoid(t))
    expected.sum().backward()
    assert_close(loss, expected.detach().numpy(), kind=kind)
    assert_close(x.grad, t.grad.numpy(), kind=grad_kind)


def test_casting_to_integers_leaves_the_graph_like_torch():
    # e.g. quantising activations to integer codes, then scaling them by a learned step
    x, w = np.array([1.5, -2.5, 3.7]), np.array([0.5, 2.0, -1.0])
    codes = Tensor(x, requires_grad=True).astype(np.int64)
    assert not codes.requires_grad, "an int64 Tensor requires gradients"
    step = Tensor(w, requires_grad=True)
    (codes * step).sum().backward()
    t_step = torch.tensor(w, requires_grad=True)
    (torch.tensor(x, requires_grad=True).long() * t_step).sum().backward()
    assert_close(step.grad, t_step.grad.numpy(), kind="float64")


def test_zero_exponent_at_zero_base_has_zero_gradient_like_torch():
    base, exponent = np.array([0.0, 2.0, 0.0]), np.array([0.0, 0.0, 1.0])
    x, y = Tensor(base, requires_grad=True), Tensor(exponent, requires_grad=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        (x**y).sum().backward()
    tx, ty = torch.tensor(base, requires_grad=True), torch.tensor(exponent, requires_grad=True)
    (tx**ty).sum().backward()
    assert_close(x.grad, tx.grad.numpy(), kind="float64")
    assert_close(y.grad, ty.grad.numpy(), kind="float64")
