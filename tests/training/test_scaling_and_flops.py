"""FLOP counting against the matmuls a forward pass really does; the scaling-law fits
recover the laws that generated their data; a tiny sweep end to end."""

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from autograd.graph import toposort
from npplm.models.gpt import GPT2LMHeadModel, GPTConfig, num_parameters
from npplm.models.llama import LlamaConfig, LlamaForCausalLM
from npplm.training import flops
from npplm.training.scaling import (
    ChinchillaFit,
    fit_chinchilla,
    fit_power_law,
    fit_runs,
    run_sweep,
)


def matmul_flops_of_forward(model, B, T):
    """2 M K N for every matmul and linear node in the graph of one forward pass (and
    the two inside fused causal attention)."""
    ids = np.random.default_rng(0).integers(0, model.config.vocab_size, (B, T))
    loss = model(ids, labels=ids).loss
    total = 0
    for node in toposort(loss._node):
        name = node.primitive.name
        if name == "matmul":
            a, b = node.inputs[:2]
            total += 2 * np.prod(np.broadcast_shapes(a.shape[:-2], b.shape[:-2]), dtype=int) \
                * a.shape[-2] * a.shape[-1] * b.shape[-1]
        elif name == "linear":
            x, w = node.inputs[:2]
            total += 2 * (x.size // x.shape[-1]) * w.shape[0] * w.shape[1]
        elif name == "causal_attention":  # q k^T and p v in one node: 2 B H T S D each
            q, k = node.inputs[:2]
            total += 2 * 2 * q.size * k.shape[-2]  # counted dense, as 12 L T A does
    return total


@pytest.mark.parametrize("make", [
    lambda: GPT2LMHeadModel(GPTConfig.tiny(n_positions=16)),
    lambda: LlamaForCausalLM(LlamaConfig.tiny()),
], ids=["gpt2", "llama-gqa"])
def test_flops_per_token_count_the_matmuls_the_forward_does(make):
    """6 N + 12 L T A is three times the forward's matmul FLOPs per token, exactly."""
    model, B, T = make(), 2, 16
    forward = matmul_flops_of_forward(model, B, T)
    assert flops.training_flops_per_token(model, T) * B * T == 3 * forward


def test_linear_parameters_of_gpt2():
    config = GPTConfig.gpt2()
    model_free = num_parameters(config)  # no allocation: derive N from the count
    C, L, V, P = config.n_embd, config.n_layer, config.vocab_size, config.n_positions
    biases_and_norms = L * (3 * C + C + 4 * C + C + 4 * C) + 2 * C
    expected = model_free - P * C - biases_and_norms  # the tied head's V C stays in
    model = GPT2LMHeadModel(GPTConfig.tiny())
    c, l, v, p = 32, 2, 64, 32
    assert flops.linear_parameters(model) == l * (c * 3 * c + c * c + 2 * c * 37) + v * c
    assert expected == L * 12 * C * C + V * C and p == 32


def test_mfu_and_peak():
    peak = flops.matmul_peak(n=256, repeats=2)
    assert peak > 1e8  # any CPU does 0.1 GFLOP/s
    assert math.isclose(flops.mfu(1000.0, 1e6, 1e10), 0.1)


@given(Nc=st.floats(1e3, 1e9), alpha=st.floats(0.05, 1.0))
def test_power_law_fit_recovers_its_law(Nc, alpha):
    N = np.geomspace(1e3, 1e6, 6)
    got_Nc, got_alpha = fit_power_law(N, (Nc / N) ** alpha)
    assert math.isclose(got_alpha, alpha, rel_tol=1e-6)
    assert math.isclose(got_Nc, Nc, rel_tol=1e-4)


def test_chinchilla_fit_recovers_its_law_and_the_optimum_minimises_the_loss():
    truth = ChinchillaFit(E=1.7, A=400.0, B=1200.0, alpha=0.34, beta=0.28, rmse=0.0)
    N, D = np.meshgrid(np.geomspace(1e4, 1e7, 4), np.geomspace(1e5, 1e8, 4))
    fit = fit_chinchilla(N.ravel(), D.ravel(), truth.loss(N.ravel(), D.ravel()))
    assert (fit.alpha, fit.beta) == (0.34, 0.28)
    for k in ("E", "A", "B"):
        assert math.isclose(getattr(fit, k), getattr(truth, k), rel_tol=1e-6)
    C = 1e15
    n_opt, d_opt = truth.compute_optimal(C)
    assert math.isclose(6 * n_opt * d_opt, C, rel_tol=1e-9)
    for n in (n_opt * 0.8, n_opt * 1.25):  # any other split of C is worse
        assert truth.loss(n, C / (6 * n)) > truth.loss(n_opt, d_opt)


def test_fit_errors_name_the_problem():
    with pytest.raises(ValueError, match="two different sizes"):
        fit_power_law([10, 10], [3.0, 2.0])
    with pytest.raises(ValueError, match="does not fall"):
        fit_power_law([10, 100], [2.0, 3.0])
    with pytest.raises(ValueError, match="more runs than its 5 parameters"):
        fit_chinchilla([1, 2, 3, 4, 5], [1, 2, 3, 4, 5], [1, 2, 3, 4, 5])


@pytest.mark.parametrize("widths, steps, message", [
    ((32,), (10, 20, 30), "at least two different widths"),  # failed in the fit, at the end
    ((16, 32), (10, 20), "4 runs, but L\\(N, D\\) has 5 parameters"),  # fitted 5 to 4
    ((16, 32, 48), (10,), "two different step budgets"),
    ((16, 50), (10, 20, 30), "does not split into 3 heads"),
    ((16, 0), (10, 20, 30), "--widths 0"),
])
def test_a_sweep_that_cannot_be_fitted_is_refused_before_training(widths, steps, message):
    from npplm.training.scaling import check_sweep

    with pytest.raises(ValueError, match=message):
        check_sweep(widths, steps)
    with pytest.raises(ValueError, match=message):  # run_sweep checks before reading data
        run_sweep(widths=widths, steps=steps, log=pytest.fail)


def test_a_tiny_sweep_fits_and_plots(tmp_path):
    from npplm.training.scaling import plot_sweep

    runs = run_sweep(widths=(16, 32), steps=(4, 8, 16), max_chars=60_000, vocab_size=300,
                     block_size=32, batch_size=4, log=lambda _: None)
    assert len(runs) == 6 and all(np.isfinite(r["val_loss"]) for r in runs)
    fits = fit_runs(runs)
    assert fits["chinchilla"]["rmse"] < 0.5
    plot_sweep(runs, fits, tmp_path / "scaling.png")
    assert (tmp_path / "scaling.png").stat().st_size > 5000
