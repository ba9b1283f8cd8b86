"""GLM (npplm.models.glm), proved by properties: no reference implementation can be run.

The blank-infilling mask's three invariants (hypothesis over Part A lengths and cache
offsets), the data layout of the paper's worked example, cached infilling against full
recomputation, the embedding gradient shrink (exact scaling, unchanged values), DeepNorm's
alpha/beta, finite-difference gradients of a float64 tiny model, one SGD step lowering the
loss, parameter counts, and input errors naming the value and the limit.
"""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from autograd import Tensor, gradcheck, no_grad
from npplm.generation import beam_search
from npplm.models.glm import (
    IGNORE_INDEX,
    GLMConfig,
    GLMForConditionalGeneration,
    blank_infilling_inputs,
    blank_infilling_mask,
    fill_blank,
    num_parameters,
)
from tests.tolerances import assert_close

CONFIG = GLMConfig.tiny()
MASK, GMASK, SOP, EOP = (CONFIG.mask_token_id, CONFIG.gmask_token_id, CONFIG.sop_token_id,
                         CONFIG.eop_token_id)


def tiny_model(dtype=np.float64, **overrides):
    config = GLMConfig.tiny(embedding_dropout_prob=0.0, attention_dropout_prob=0.0,
                            output_dropout_prob=0.0, **overrides)
    return GLMForConditionalGeneration(config, seed=0).astype(dtype)


def example(tokens=(3, 4, 5, 6, 7, 8), spans=((4, 6), (2, 3))):
    return blank_infilling_inputs(tokens, list(spans), mask_token_id=MASK, sop_token_id=SOP,
                                  eop_token_id=EOP)


def batch_of(*rows):
    """Stack same-length examples into (B, T) ids, (B, 2, T) positions, labels, (B,) sep."""
    return (np.stack([r["input_ids"] for r in rows]), np.stack([r["position_ids"] for r in rows]),
            np.stack([r["labels"] for r in rows]), np.array([r["sep"] for r in rows]))


# --- the data layout and the mask --------------------------------------------------------------


def test_layout_matches_the_papers_example():
    # x1..x6 with spans {x5 x6} then {x3} (figure 2 of arXiv:2103.10360).
    x = example()
    assert x["sep"] == 5
    assert x["input_ids"].tolist() == [3, 4, MASK, 6, MASK, SOP, 7, 8, SOP, 5]
    assert x["labels"].tolist() == [IGNORE_INDEX] * 5 + [7, 8, EOP, 5, EOP]
    assert x["position_ids"].tolist() == [[0, 1, 2, 3, 4, 4, 4, 4, 2, 2],
                                          [0, 0, 0, 0, 0, 1, 2, 3, 1, 2]]


@pytest.mark.parametrize("spans, message", [([(2, 2)], "0 <= start < end <= 6"),
                                            ([(0, 7)], "0 <= start < end <= 6"),
                                            ([(1, 4), (3, 5)], "overlap")])
def test_bad_spans_are_refused(spans, message):
    with pytest.raises(ValueError, match=message):
        example(spans=spans)


@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_mask_invariants(data):
    S = data.draw(st.integers(1, 12), label="S")
    past = data.draw(st.integers(0, S - 1), label="past")
    sep = np.array(data.draw(st.lists(st.integers(0, S), min_size=1, max_size=3), label="sep"))
    allowed = blank_infilling_mask(sep, S - past, past)  # (B, T, S)
    for b, n in enumerate(sep):
        for t in range(S - past):
            i = past + t
            seen = allowed[b, t]
            assert seen[:n].all()  # everyone sees all of Part A
            if i < n:
                assert not seen[n:].any()  # Part A never sees Part B
            else:
                assert (seen[n:] == (np.arange(n, S) <= i)).all()  # Part B is causal


def test_part_a_outputs_do_not_depend_on_part_b():
    model = tiny_model()
    ids, pos, _, sep = batch_of(example())
    other = ids.copy()
    other[0, 5:] = np.arange(10, 15)  # different Part B tokens
    with no_grad():
        a = model(ids, pos, sep).logits.data
        b = model(other, pos, sep).logits.data
    assert_close(a[:, :5], b[:, :5], kind="float64")
    assert np.abs(a[:, 5:] - b[:, 5:]).max() > 1e-6


def test_a_full_boolean_mask_equals_the_sep_form():
    model = tiny_model()
    ids, pos, _, sep = batch_of(example())
    full = blank_infilling_mask(sep, ids.shape[1])
    with no_grad():
        assert_close(model(ids, pos, full).logits, model(ids, pos, sep).logits,
                     kind="float64")


# --- caching and infilling ---------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_cached_infilling_equals_recomputation(dtype):
    model = tiny_model(dtype)
    ids, pos, _, sep = batch_of(example(), example(tokens=(9, 10, 11, 12, 13, 14),
                                                   spans=((0, 2), (3, 4))))
    B, T = ids.shape
    with no_grad():
        full = model(ids, pos, sep).logits.data
        cache = model.new_cache(B, T)
        # Part A at once, then Part B one token at a time (two tokens, then singles).
        steps = [(0, 5), (5, 7)] + [(t, t + 1) for t in range(7, T)]
        pieces = [model(ids[:, a:b], pos[:, :, a:b], sep, cache=cache).logits.data
                  for a, b in steps]
    assert_close(np.concatenate(pieces, axis=1), full, kind=np.dtype(dtype).name)


@pytest.mark.parametrize("blank", [MASK, GMASK])
def test_fill_blank_is_greedy_decoding_of_the_recomputed_sequence(blank):
    model = tiny_model()
    part_a = np.array([[3, 4, blank, 6], [7, blank, 9, 10]]) if blank == MASK else \
        np.array([[3, 4, 5, blank], [7, 8, 9, blank]])
    new = fill_blank(model, part_a, max_new_tokens=5)
    for row, tokens in zip(part_a, new):
        mask_at = int(np.flatnonzero(row == blank)[0])
        # Recompute from scratch: Part A, then [S] and the chosen tokens, greedy each step.
        ids = list(row) + [SOP]
        for token in tokens + [None]:
            n = len(ids) - 4
            pos = np.array([list(range(4)) + [mask_at] * n, [0] * 4 + list(range(1, n + 1))])
            with no_grad():
                logits = model(np.array([ids]), pos[None], np.array([4])).logits.data
            best = int(logits[0, -1].argmax())
            if token is None:  # stopped: by [E] or by the budget
                assert best == EOP or len(tokens) == 5
            else:
                assert best == token
                ids.append(token)


def test_fill_blank_stops_at_eop():
    model = tiny_model()
    # Every position's final state becomes u (LayerNorm gain 0, bias u), and [E]'s row of
    # the tied table 10 u: [E] is then the likeliest token everywhere.
    ln = model.transformer.layers[-1].post_mlp_layernorm
    u = np.random.default_rng(1).standard_normal(CONFIG.hidden_size)
    ln.weight.data[:] = 0.0
    ln.bias.data[:] = u
    model.transformer.word_embeddings.weight.data[EOP] = 10 * u
    assert fill_blank(model, np.array([[3, MASK, 5], [GMASK, 4, 5]]), 4) == [[], []]


def test_fill_blank_beam_search_equals_the_search_over_recomputation():
    # The beams go through the shared decoding loop with the cache reordered between
    # steps; the same search whose step recomputes each beam's sequence from scratch must
    # find the same blanks (checks the reorder and the positions of each beam's tokens).
    model = tiny_model()
    part_a = np.array([[3, 4, MASK, 6], [GMASK, 8, 9, 10]])
    N, B = 3, 2
    mask_at = np.repeat([2, 0], N)
    history = np.full((B * N, 1), SOP)  # each row's Part B so far: [S], then its tokens

    def recompute(tokens, rows):
        nonlocal history
        if tokens is not None:
            history = np.concatenate([history[rows], tokens[:, None]], axis=1)
        n = history.shape[1]
        ids = np.concatenate([np.repeat(part_a, N, axis=0), history], axis=1)
        pos = np.stack([np.concatenate([np.tile(np.arange(4), (B * N, 1)),
                                        np.repeat(mask_at[:, None], n, axis=1)], axis=1),
                        np.tile(np.r_[np.zeros(4, int), np.arange(1, n + 1)], (B * N, 1))], 1)
        with no_grad():
            return model(ids, pos, np.full(B * N, 4)).logits.numpy()[:, -1]

    want = beam_search(recompute, B, N, 5, EOP, pad_token_id=EOP).sequences
    got = fill_blank(model, part_a, max_new_tokens=5, num_beams=N)
    for row, tokens in zip(want, got):
        ends = np.flatnonzero(row == EOP)
        assert tokens == row[:ends[0] if ends.size else len(row)].tolist()


def test_fill_blank_errors():
    model = tiny_model()
    with pytest.raises(ValueError, match=r"row 1 holds no \[MASK\] \(44\) or \[gMASK\] \(45\)"):
        fill_blank(model, np.array([[3, MASK], [3, 4]]), 2)
    with pytest.raises(ValueError, match="31 new = 33 exceed max_sequence_length=32"):
        fill_blank(model, np.array([[3, MASK]]), 31)


# --- the embedding gradient shrink ---------------------------------------------------------------


def test_grad_scale_shrinks_only_the_lookup_gradient_and_keeps_values():
    # The word table's gradient = (output layer's part) + alpha (lookup's part), so
    # (g(1) - g(alpha)) / (1 - alpha) is the lookup's part whatever alpha is; every other
    # parameter's gradient, and every forward value, must not change at all.
    ids, pos, labels, sep = batch_of(example())
    grads, logits = {}, {}
    for alpha in (1.0, 0.1, 0.5):
        model = tiny_model(embedding_grad_scale=alpha)
        out = model(ids, pos, sep, labels=labels)
        out.loss.backward()
        logits[alpha] = out.logits.data
        grads[alpha] = {k: p.grad for k, p in model.named_parameters()}
    assert np.array_equal(logits[1.0], logits[0.1])
    assert np.array_equal(logits[1.0], logits[0.5])
    table = "transformer.word_embeddings.weight"
    for k in grads[1.0]:
        if k != table:
            assert_close(grads[0.1][k], grads[1.0][k], kind="float64")
    lookup_01 = (grads[1.0][table] - grads[0.1][table]) / 0.9
    lookup_05 = (grads[1.0][table] - grads[0.5][table]) / 0.5
    assert_close(lookup_01, lookup_05, kind="float64")
    unused = np.setdiff1d(np.arange(CONFIG.vocab_size), ids)  # only the output layer's part
    assert np.abs(lookup_01[unused]).max() < 1e-12
    assert np.abs(lookup_01[np.unique(ids)]).min() > 1e-8


def test_grad_scale_primitive_exactly():
    from npplm.layers import grad_scale

    x = Tensor(np.arange(6.0).reshape(2, 3), requires_grad=True)
    y = grad_scale(x, alpha=0.25)
    assert np.array_equal(y.data, x.data) and y.data is not x.data
    y.backward(np.full((2, 3), 2.0))
    assert np.array_equal(x.grad, np.full((2, 3), 0.5))


# --- DeepNorm, initialisation, parameter counts -------------------------------------------------


@pytest.mark.parametrize("n", [1, 12, 24, 48])
def test_deepnorm_constants_are_the_decoder_only_row_of_deepnet_table_1(n):
    c = GLMConfig.tiny(num_layers=n)
    assert c.deepnorm_alpha == pytest.approx((2 * n) ** 0.25)
    assert c.deepnorm_beta == pytest.approx((8 * n) ** -0.25)
    plain = GLMConfig.tiny(num_layers=n, deepnorm=False)
    assert plain.deepnorm_alpha == plain.deepnorm_beta == 1.0


def test_deepnorm_initialisation_scales_value_output_and_ffn_by_beta():
    config = GLMConfig.tiny(hidden_size=256, num_attention_heads=4, intermediate_size=512,
                            num_layers=8)
    block = GLMForConditionalGeneration(config).transformer.layers[0]
    C, F, beta = 256, 512, config.deepnorm_beta
    w = block.attention.query_key_value.weight.data
    xavier = np.sqrt(2 / (C + C))
    assert w[:2 * C].std() == pytest.approx(xavier, rel=0.05)  # W_q, W_k: gain 1
    assert w[2 * C:].std() == pytest.approx(beta * xavier, rel=0.05)  # W_v: gain beta
    assert block.attention.dense.weight.data.std() == pytest.approx(beta * xavier, rel=0.05)
    for lin in (block.mlp.dense_h_to_4h, block.mlp.dense_4h_to_h):
        assert lin.weight.data.std() == pytest.approx(beta * np.sqrt(2 / (C + F)), rel=0.05)
    assert block.alpha == pytest.approx(16 ** 0.25)


@pytest.mark.parametrize("preset, expected", [("base", 109_335_552), ("large", 334_684_160),
                                              ("glm_10b", 9_880_666_112)])
def test_parameter_counts(preset, expected):
    assert num_parameters(getattr(GLMConfig, preset)()) == expected


def test_parameter_count_matches_an_allocated_model():
    for config in (GLMConfig.tiny(), GLMConfig.tiny(intermediate_size=None, num_layers=3)):
        assert GLMForConditionalGeneration(config).num_parameters() == num_parameters(config)


# --- gradients and training ----------------------------------------------------------------------


POST, PRE = {}, {"layernorm_position": "pre", "deepnorm": False}  # GLM-130B's, GLM-10B's


@pytest.mark.parametrize("path, layout", [
    ("transformer.layers.0.attention.query_key_value.weight", POST),
    ("transformer.layers.1.mlp.dense_4h_to_h.weight", POST),
    ("transformer.layers.0.post_mlp_layernorm.weight", POST),
    ("transformer.block_position_embeddings.weight", POST),
    ("transformer.word_embeddings.weight", POST),
    ("transformer.layers.0.input_layernorm.weight", PRE),
    ("transformer.layers.1.post_attention_layernorm.bias", PRE),
    ("transformer.final_layernorm.weight", PRE),
    ("transformer.layers.0.mlp.dense_4h_to_h.weight", PRE)])
def test_loss_gradient_matches_finite_differences(path, layout):
    model = tiny_model(num_layers=2, hidden_size=8, num_attention_heads=2, intermediate_size=6,
                       max_sequence_length=12, **layout)
    ids, pos, labels, sep = batch_of(example())
    *owners, leaf = path.split(".")
    owner = model
    for name in owners:
        owner = owner[int(name)] if name.isdigit() else getattr(owner, name)
    original = getattr(owner, leaf)

    def loss(w):
        setattr(owner, leaf, w)
        if leaf == "weight" and owner is model.transformer.word_embeddings:
            model.lm_head.weight = w  # keep the tie
        return model(ids, pos, sep, labels=labels).loss

    try:
        gradcheck(loss, original.data.copy(), atol=1e-6, rtol=1e-5)
    finally:
        setattr(owner, leaf, original)
        model.lm_head.weight = model.transformer.word_embeddings.weight


def test_one_sgd_step_lowers_the_loss():
    model = tiny_model(embedding_grad_scale=0.1)
    ids, pos, labels, sep = batch_of(example())
    before = model(ids, pos, sep, labels=labels).loss
    before.backward()
    for p in model.parameters():
        p.data -= 0.05 * p.grad
    after = model(ids, pos, sep, labels=labels).loss
    assert float(after.data) < float(before.data)


def test_dropout_in_training_mode_changes_outputs_and_eval_does_not():
    model = GLMForConditionalGeneration(GLMConfig.tiny(), seed=0)
    ids, pos, _, sep = batch_of(example())
    a, b = (model(ids, pos, sep).logits.data for _ in range(2))
    assert not np.array_equal(a, b)
    model.eval()
    a, b = (model(ids, pos, sep).logits.data for _ in range(2))
    assert np.array_equal(a, b)


# --- errors -------------------------------------------------------------------------------------


def test_input_errors_name_the_value_and_the_limit():
    model = tiny_model()
    ids, pos, labels, sep = batch_of(example())
    with pytest.raises(IndexError, match="token id 48 is out of range .* 48 rows"):
        model(np.where(ids == 3, 48, ids), pos, sep)
    with pytest.raises(IndexError, match="block position 32 is out of range .* 32 rows"):
        bad = pos.copy()
        bad[0, 1, -1] = 32
        model(ids, bad, sep)
    with pytest.raises(ValueError, match=r"sep\) 11 is not a Part A length in \[0, S=10\]"):
        model(ids, pos, np.array([11]))
    with pytest.raises(ValueError, match=r"position_ids has shape \(1, 10\) .* \(1, 2, 10\)"):
        model(ids, pos[:, 0], sep)
    with pytest.raises(ValueError, match=r"attention_mask has shape \(2,\)"):
        model(ids, pos, np.array([5, 5]))
    with pytest.raises(TypeError, match="input_ids must hold integers"):
        model(ids.astype(float), pos, sep)
    with pytest.raises(ValueError, match=r"labels has shape \(1, 9\)"):
        model(ids, pos, sep, labels=labels[:, 1:])


@pytest.mark.parametrize("overrides, message", [
    (dict(hidden_size=30), "hidden_size=30 is not divisible by num_attention_heads=4"),
    (dict(num_layers=0), r"num_layers=0 must be a positive integer"),
    (dict(embedding_grad_scale=0.0), r"embedding_grad_scale=0.0 must be in \(0, 1\]"),
    (dict(sop_token_id=48), r"sop_token_id=48 is outside the vocabulary \(vocab_size=48\)"),
    (dict(output_dropout_prob=1.0), r"output_dropout_prob=1.0 must be in \[0, 1\)"),
])
def test_config_errors(overrides, message):
    with pytest.raises(ValueError, match=message):
        GLMConfig.tiny(**overrides)


# --- pre-LN (GLM-10B's arrangement, for the stability experiment) ---------------------------


def test_pre_ln_has_a_final_layernorm_and_refuses_deepnorm():
    config = GLMConfig.tiny(layernorm_position="pre", deepnorm=False)
    model = GLMForConditionalGeneration(config)
    names = [n for n, _ in model.named_parameters()]
    assert "transformer.final_layernorm.weight" in names
    assert "transformer.layers.0.input_layernorm.weight" in names
    assert not any("post_mlp_layernorm" in n for n in names)
    assert model.num_parameters() == num_parameters(config)
    with pytest.raises(ValueError, match="DeepNorm scales a post-LN residual"):
        GLMConfig.tiny(layernorm_position="pre")
    with pytest.raises(ValueError, match="layernorm_position='sandwich'"):
        GLMConfig.tiny(layernorm_position="sandwich", deepnorm=False)
