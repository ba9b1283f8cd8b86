"""GLM-130B's shape of GLM (npplm.models.glm with GLMConfig.glm_130b's switches), against a
transcription of the public reference code.

GLM-130B's weights are not downloadable here and its code needs CUDA, so the reference is a
float64 PyTorch transcription of SwissArmyTransformer's `sat/model/official/glm130B_model.py`
(DeepNormWithGLUMixin.layer_forward, GEGLU, RotaryEmbeddingMixin with and without
position_encoding_2d, SelfAttentionWithFP32SoftmaxMixin's scores, FinalForwardMixin's tied
output) and of `sat/model/position_embedding/rotary_embeddings.py` (RotaryEmbedding,
rotate_half, apply_rotary_pos_emb_index), written in its sequence-first layout, with its
per-head fused query_key_value, its input_layernorm at the start of every layer and its
final_layernorm, plus the source's one-line embedding gradient shrink. Two departures, both
arithmetic only: the rotary tables are computed in float64 (SAT: float32, cast), and the
mask fills -inf where SAT fills -10000 (both give exactly 0 probability here).

Checked: logits and every parameter's gradient (float64, 1e-9), for one-row and 2D rotary
positions; DeepNorm's constants and initial gains; the parameter count of the full-size
preset; cached infilling against recomputation with RoPE; `npplm train` on the 130B-shaped
tiny preset.
"""

import json
import math

import numpy as np
import pytest

from npplm.models.glm import (
    GLMConfig,
    GLMForConditionalGeneration,
    blank_infilling_inputs,
    blank_infilling_mask,
    fill_blank,
    num_parameters,
)
from tests.tolerances import assert_close

torch = pytest.importorskip("torch")
F = torch.nn.functional

SWITCHES = dict(deepnorm_constants="glm-130b", embedding_layernorm=True, hidden_act="geglu",
                position_encoding="rotary", embedding_grad_scale=0.1)


def tiny_130b(**overrides):
    """GLM-130B's switches on GLM's tiny shape, dropout off, float64."""
    config = GLMConfig.tiny(**{**SWITCHES, "embedding_dropout_prob": 0.0,
                               "attention_dropout_prob": 0.0, "output_dropout_prob": 0.0,
                               "intermediate_size": 12, **overrides})
    return GLMForConditionalGeneration(config, seed=1).astype(np.float64)


def example(count_on=False):
    config = GLMConfig.tiny()
    return blank_infilling_inputs([5, 6, 7, 8, 9, 10, 11, 12, 13], [(6, 9), (1, 3)],
                                  mask_token_id=config.mask_token_id,
                                  sop_token_id=config.sop_token_id,
                                  eop_token_id=config.eop_token_id, count_on=count_on)


# --- the transcription ------------------------------------------------------------------------


def sat_rotary_tables(dim, seq_len, base=10000):
    """RotaryEmbedding.forward: cos, sin (seq, 1, dim), emb = cat(freqs, freqs)."""
    inv_freq = 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.float64) / dim))
    t = torch.arange(seq_len, dtype=torch.float64)
    emb = torch.cat([torch.einsum("i,j->ij", t, inv_freq)] * 2, dim=-1)
    return emb.cos()[:, None, :], emb.sin()[:, None, :]


def sat_rotate_half(x):
    x1, x2 = x[..., :x.shape[-1] // 2], x[..., x.shape[-1] // 2:]
    return torch.cat((-x2, x1), dim=x1.ndim - 1)


def sat_apply_rotary_pos_emb_index(q, k, cos, sin, position_id):
    # position_id: [sq, b], q, k: [sq, b, np, hn], cos: [sq, 1, hn] -> [sq, b, 1, hn]
    cos = F.embedding(position_id, cos.squeeze(1)).unsqueeze(2)
    sin = F.embedding(position_id, sin.squeeze(1)).unsqueeze(2)
    return q * cos + sat_rotate_half(q) * sin, k * cos + sat_rotate_half(k) * sin


def sat_forward(w, input_ids, position_ids, masked, config, egs_alpha):
    """GLM130B.forward: ids (b, s) -> logits (b, s, V). `w` holds SAT's weights by name,
    `masked` (b, 1, s, s) True where SAT's mask hides a key."""
    L, H = config.num_layers, config.num_attention_heads
    hn = config.hidden_size // H
    word = F.embedding(input_ids, w["word_embeddings"])  # WordEmbedding mixin
    word = word * egs_alpha + word.detach() * (1 - egs_alpha)  # the source's EGS one-liner
    hidden = word.transpose(0, 1)  # [s, b, h]
    two_d = config.position_encoding == "rotary_2d"
    cos, sin = sat_rotary_tables(hn // 2 if two_d else hn, int(position_ids.max()) + 1)
    alpha = (2 * L) ** 0.5
    for i in range(L):
        p = f"layers.{i}."

        def ln(x, n, p=p):
            return F.layer_norm(x, (x.shape[-1],), w[p + n + ".weight"], w[p + n + ".bias"],
                                config.layernorm_epsilon)

        attention_input = ln(hidden, "input_layernorm")
        # RotaryEmbeddingMixin.attention_forward
        mixed = F.linear(attention_input, w[p + "attention.query_key_value.weight"],
                         w[p + "attention.query_key_value.bias"])
        mixed = mixed.view(*mixed.shape[:-1], H, 3 * hn)  # [s, b, np, 3 hn]
        q, k, v = mixed.split(hn, dim=-1)
        if two_d:
            q1, q2 = q.chunk(2, dim=q.ndim - 1)
            k1, k2 = k.chunk(2, dim=k.ndim - 1)
            pos, block = (position_ids[:, 0, :].transpose(0, 1).contiguous(),
                          position_ids[:, 1, :].transpose(0, 1).contiguous())
            q1, k1 = sat_apply_rotary_pos_emb_index(q1, k1, cos, sin, pos)
            q2, k2 = sat_apply_rotary_pos_emb_index(q2, k2, cos, sin, block)
            q, k = torch.cat([q1, q2], dim=q1.ndim - 1), torch.cat([k1, k2], dim=k1.ndim - 1)
        else:
            q, k = sat_apply_rotary_pos_emb_index(q, k, cos, sin, position_ids.transpose(0, 1))
        # SelfAttentionWithFP32SoftmaxMixin.attention_fn (no mems)
        coeff = float(i + 1)
        q = q / (math.sqrt(hn) * coeff)
        scores = torch.einsum("sbnh,tbnh->bnst", q, k)  # [b, np, sq, sk]
        scores = scores.masked_fill(masked, -math.inf) * coeff
        probs = F.softmax(scores, dim=-1)
        context = torch.einsum("bnst,tbnh->sbnh", probs, v).reshape(*hidden.shape)
        attention_output = F.linear(context, w[p + "attention.dense.weight"],
                                    w[p + "attention.dense.bias"])
        # DeepNormWithGLUMixin.layer_forward
        hidden = attention_input * alpha + attention_output
        mlp_input = ln(hidden, "post_attention_layernorm")
        h = F.linear(mlp_input, w[p + "mlp.dense_h_to_4h.weight"], w[p + "mlp.dense_h_to_4h.bias"])
        x1, x2 = h.chunk(2, dim=h.ndim - 1)  # GEGLU
        h = x1 * F.gelu(x2)
        mlp_output = F.linear(h, w[p + "mlp.dense_4h_to_h.weight"],
                              w[p + "mlp.dense_4h_to_h.bias"])
        hidden = mlp_input * alpha + mlp_output
    hidden = F.layer_norm(hidden, (hidden.shape[-1],), w["final_layernorm.weight"],
                          w["final_layernorm.bias"], config.layernorm_epsilon)
    return F.linear(hidden, w["word_embeddings"]).transpose(0, 1)  # FinalForwardMixin


def sat_names(config):
    """SAT's weight name -> (our parameter path, how to lay ours out as SAT's).

    SAT's fused query_key_value holds each head's q, k, v rows together, (H, 3, D) by
    rows; ours holds the Q, K and V blocks, (3, H, D). SAT's layer i normalises its input
    (input_layernorm), which is our embedding LayerNorm for i = 0 and layer i - 1's
    post_mlp_layernorm after; its final_layernorm is our last layer's post_mlp_layernorm.
    """
    H, L = config.num_attention_heads, config.num_layers
    D = config.hidden_size // H

    def per_head(a):  # (3 H D, ...) -> (H 3 D, ...)
        return a.reshape(3, H, D, *a.shape[1:]).swapaxes(0, 1).reshape(a.shape)

    names = {"word_embeddings": ("transformer.word_embeddings.weight", None)}
    for i in range(L):
        ours, sat = f"transformer.layers.{i}.", f"layers.{i}."
        before = ("transformer.embedding_layernorm" if i == 0 else
                  f"transformer.layers.{i - 1}.post_mlp_layernorm")
        for leaf in ("weight", "bias"):
            names[sat + "input_layernorm." + leaf] = (f"{before}.{leaf}", None)
            names[sat + "attention.query_key_value." + leaf] = (
                ours + "attention.query_key_value." + leaf, per_head)
            for n in ("attention.dense", "post_attention_layernorm", "mlp.dense_h_to_4h",
                      "mlp.dense_4h_to_h"):
                names[sat + n + "." + leaf] = (ours + n + "." + leaf, None)
    for leaf in ("weight", "bias"):
        names["final_layernorm." + leaf] = (
            f"transformer.layers.{L - 1}.post_mlp_layernorm.{leaf}", None)
    return names


@pytest.mark.parametrize("position_encoding", ["rotary", "rotary_2d"])
@pytest.mark.parametrize("count_on", [False, True])
def test_logits_and_gradients_equal_the_transcription(position_encoding, count_on):
    model = tiny_130b(position_encoding=position_encoding, num_layers=3)
    config = model.config
    rows = [example(count_on), example(count_on)]
    ids = np.stack([r["input_ids"] for r in rows])
    ids[1, 0] = 30  # two different rows
    pos = np.stack([r["position_ids"] for r in rows])
    sep = np.array([r["sep"] for r in rows])
    labels = np.stack([r["labels"] for r in rows])

    out = model(ids, pos, sep, labels=labels)
    out.loss.backward()
    params = dict(model.named_parameters())

    names = sat_names(config)
    weights = {}
    for sat, (path, layout) in names.items():
        a = params[path].data
        weights[sat] = torch.tensor(layout(a) if layout else a, requires_grad=True)
    masked = torch.tensor(~blank_infilling_mask(sep, ids.shape[1]))[:, None]  # (B, 1, T, S)
    t_pos = torch.tensor(pos if position_encoding == "rotary_2d" else pos[:, 0])
    logits = sat_forward(weights, torch.tensor(ids), t_pos, masked, config, egs_alpha=0.1)
    assert_close(out.logits, logits.detach().numpy(), "float64")
    loss = F.cross_entropy(logits.reshape(-1, config.vocab_size), torch.tensor(labels).reshape(-1),
                           ignore_index=-100)
    assert_close(out.loss, loss.detach().numpy(), "float64")
    loss.backward()
    for sat, (path, layout) in names.items():  # one to one (see sat_names)
        ours = params[path].grad
        assert_close(layout(ours) if layout else ours, weights[sat].grad.numpy(), "float64")


def test_the_one_row_positions_ignore_the_block_row_and_2d_reads_it():
    ex = example()
    ids, pos, sep = ex["input_ids"][None], ex["position_ids"][None], np.array([ex["sep"]])
    shifted = pos.copy()
    shifted[:, 1] = shifted[:, 1, ::-1]  # RoPE sees relative positions: not a uniform shift
    one_row = tiny_130b()
    assert_close(one_row(ids, shifted, sep).logits, one_row(ids, pos, sep).logits, "exact64")
    two_d = tiny_130b(position_encoding="rotary_2d")
    diff = np.abs(two_d(ids, shifted, sep).logits.data - two_d(ids, pos, sep).logits.data)
    assert diff.max() > 1e-6


# --- DeepNorm's constants, the initialisation, the counts ------------------------------------


@pytest.mark.parametrize("n", [1, 8, 70])
def test_glm_130b_deepnorm_constants(n):
    c = GLMConfig.tiny(num_layers=n, deepnorm_constants="glm-130b")
    assert c.deepnorm_alpha == pytest.approx(math.sqrt(2 * n))  # glm130B_model.py's alpha
    assert c.deepnorm_beta == pytest.approx((2 * n) ** -0.5)  # the paper's init gain
    deepnet = GLMConfig.tiny(num_layers=n)  # DeepNet's table, the source's
    assert deepnet.deepnorm_alpha == pytest.approx((2 * n) ** 0.25)
    assert deepnet.deepnorm_beta == pytest.approx((8 * n) ** -0.25)


def test_the_130b_constants_at_70_layers_are_the_papers():
    c = GLMConfig.glm_130b()
    assert round(c.deepnorm_alpha, 2) == 11.83 and round(c.deepnorm_beta, 3) == 0.085
    assert c.inner_dim == 32768 and c.head_dim == 128


def test_geglu_initialisation_and_widths():
    config = GLMConfig.tiny(**SWITCHES, hidden_size=256, num_attention_heads=4,
                            intermediate_size=None, num_layers=8)
    C, Fw, beta = 256, 4 * 256 * 2 // 3, (2 * 8) ** -0.5
    assert config.inner_dim == Fw  # SAT's default 8/3 C
    block = GLMForConditionalGeneration(config).transformer.layers[0]
    up, down = block.mlp.dense_h_to_4h.weight.data, block.mlp.dense_4h_to_h.weight.data
    assert up.shape == (2 * Fw, C) and down.shape == (C, Fw)
    assert up.std() == pytest.approx(beta * np.sqrt(2 / (C + 2 * Fw)), rel=0.05)
    assert down.std() == pytest.approx(beta * np.sqrt(2 / (C + Fw)), rel=0.05)
    qkv = block.attention.query_key_value.weight.data
    assert qkv[:2 * C].std() == pytest.approx(np.sqrt(2 / (C + C)), rel=0.05)  # q, k: gain 1
    assert qkv[2 * C:].std() == pytest.approx(beta * np.sqrt(2 / (C + C)), rel=0.05)
    assert block.alpha == pytest.approx(4.0)


def test_parameter_counts_match_an_allocated_model():
    for overrides in ({}, {"position_encoding": "rotary_2d"}, {"hidden_act": "gelu"}):
        config = GLMConfig.tiny(**{**SWITCHES, **overrides})
        assert GLMForConditionalGeneration(config).num_parameters() == num_parameters(config)
    assert num_parameters(GLMConfig.glm_130b()) == 128_697_794_560


@pytest.mark.parametrize("overrides, message", [
    ({"position_encoding": "alibi"}, "position_encoding='alibi'"),
    ({"hidden_act": "swiglu"}, "hidden_act='swiglu'"),
    ({"deepnorm_constants": "x"}, "deepnorm_constants='x'"),
    ({"embedding_layernorm": True, "layernorm_position": "pre", "deepnorm": False},
     "embedding_layernorm"),
    ({"position_encoding": "rotary_2d", "hidden_size": 24, "num_attention_heads": 4},
     "divisible by 4"),
])
def test_config_errors(overrides, message):
    with pytest.raises(ValueError, match=message):
        GLMConfig.tiny(**overrides)


def test_positions_beyond_the_limit_are_refused():
    model = tiny_130b()
    ex = example()
    pos = ex["position_ids"][None].copy()
    pos[0, 0, -1] = model.config.max_sequence_length
    with pytest.raises(ValueError, match="outside"):
        model(ex["input_ids"][None], pos, np.array([ex["sep"]]))


# --- decoding -----------------------------------------------------------------------------------


@pytest.mark.parametrize("position_encoding", ["rotary", "rotary_2d"])
@pytest.mark.parametrize("gmask", [False, True])
def test_fill_blank_is_greedy_decoding_of_the_recomputed_sequence(position_encoding, gmask):
    model = tiny_130b(position_encoding=position_encoding).eval()
    c = model.config
    tokens = [5, 6, 7, 8, 9, 10]
    spans = [(4, 6)] if gmask else [(2, 4)]
    mask_id = c.gmask_token_id if gmask else c.mask_token_id
    ex = blank_infilling_inputs(tokens, spans, mask_token_id=mask_id, sop_token_id=c.sop_token_id,
                                eop_token_id=c.eop_token_id,
                                count_on=gmask and position_encoding == "rotary")
    sep = int(ex["sep"])
    new = fill_blank(model, ex["input_ids"][None, :sep], 4)[0]
    # Recompute: Part A, [S], then the chosen tokens, each at its block position.
    ids, pos = list(ex["input_ids"][:sep + 1]), ex["position_ids"][:, :sep + 1].tolist()
    for t in new:
        logits = model(np.array([ids]), np.array([pos]), np.array([sep])).logits.data[0, -1]
        assert int(np.argmax(logits)) == t
        ids.append(t)
        step = pos[1][-1] + 1
        pos[0].append(pos[0][sep] + (step - 1 if gmask and position_encoding == "rotary" else 0))
        pos[1].append(step)


# --- training -----------------------------------------------------------------------------------


def test_npplm_train_runs_the_130b_shaped_tiny_preset(tmp_path, capsys):
    import npplm
    from npplm import cli

    out = tmp_path / "run"
    argv = ["train", "--model", "glm", "--preset", "glm_130b_tiny", "--objective", "gmask",
            "--max-chars", "40000", "--vocab-size", "400", "--block-size", "32",
            "--batch-size", "4", "--steps", "3", "--eval-batches", "1", "--out", str(out),
            "--quiet"]
    assert cli.main(argv) == 0, capsys.readouterr().err
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    val = [r["val_loss"] for r in records if "val_loss" in r]  # steps 0 and 3
    assert len(val) == 2 and val[1] < val[0]  # it learns
    model = npplm.from_pretrained(out / "checkpoints" / "step-000003")
    c = model.config
    assert (c.position_encoding, c.deepnorm_constants, c.hidden_act, c.embedding_layernorm,
            c.embedding_grad_scale) == ("rotary", "glm-130b", "geglu", True, 0.1)
    assert model.transformer.layers[0].alpha == pytest.approx(math.sqrt(8))
    assert c.max_sequence_length == 32 + 2  # [gMASK] positions count on to n + 1


def test_a_checkpoint_written_before_these_fields_existed_still_resumes(tmp_path):
    from npplm.io import CheckpointError
    from npplm.training.checkpointing import load_model_weights

    model = GLMForConditionalGeneration(GLMConfig.tiny(), seed=0)
    model.save_pretrained(tmp_path)
    path = tmp_path / "config.json"
    config = json.loads(path.read_text())
    for key in ("deepnorm_constants", "embedding_layernorm", "position_encoding", "rope_theta",
                "hidden_act"):
        del config[key]  # as an older npplm wrote it
    path.write_text(json.dumps(config))
    load_model_weights(GLMForConditionalGeneration(GLMConfig.tiny(), seed=1), tmp_path)
    with pytest.raises(CheckpointError, match="position_encoding"):
        load_model_weights(GLMForConditionalGeneration(
            GLMConfig.tiny(position_encoding="rotary"), seed=1), tmp_path)


def test_the_collator_counts_gmask_positions_on_for_one_row_rope():
    from npplm.objectives import BlankInfillingCollator

    examples = [np.arange(3, 23), np.arange(5, 25)]
    for encoding, count_on in (("learned", False), ("rotary", True), ("rotary_2d", False)):
        config = GLMConfig.tiny(position_encoding=encoding)
        collator = BlankInfillingCollator.from_config(config, gmask_prob=1.0)
        assert collator.max_length == config.max_sequence_length - 1 - count_on
        batch = collator(examples, np.random.default_rng(0))
        for row, sep in zip(range(2), batch["attention_mask"]):
            pos, block = batch["position_ids"][row]
            part_b = slice(sep, sep + int((batch["labels"][row] != -100).sum()))
            mask_at = sep - 1  # the [gMASK] ends Part A
            expected = mask_at + block[part_b] if count_on else np.full_like(block[part_b],
                                                                             mask_at)
            np.testing.assert_array_equal(pos[part_b], expected)
    # a [MASK] blank keeps its position either way
    collator = BlankInfillingCollator.from_config(GLMConfig.tiny(position_encoding="rotary"))
    batch = collator(examples, np.random.default_rng(0))
    ids, (pos, block) = batch["input_ids"][0], batch["position_ids"][0]
    sep = batch["attention_mask"][0]
    starts = np.flatnonzero(ids[sep:] == GLMConfig.tiny().sop_token_id) + sep
    for s, e in zip(starts, list(starts[1:]) + [sep + int((batch["labels"][0] != -100).sum())]):
        assert (pos[s:e] == pos[s]).all() and ids[pos[s]] == GLMConfig.tiny().mask_token_id
