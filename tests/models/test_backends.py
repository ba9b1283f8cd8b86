"""Every family on every backend: the same numbers on NumPy, on the strict backend (NumPy
with CuPy's rules: any implicit host/device mix raises, autograd/strict.py), and on CuPy
where a CUDA device is present.

Per family and objective, from one tiny `npplm train` recipe: the loss, every gradient,
two training steps with AdamW and clipping, cached greedy and sampled generation, beam
search, GLM's fill-blank and T5's generation, and a checkpoint saved and loaded on the
device. A device model is built from the same seed, so each number must equal NumPy's."""

import numpy as np
import pytest

from autograd import backend, to_numpy
from gpu import cuda_available
from npplm.training import TrainConfig, Trainer
from npplm.training.recipe import FAMILIES, build_run

RUNS = [(family, objective) for family, fam in FAMILIES.items() for objective in fam.objectives]
BACKENDS = ["strict", pytest.param("cupy", marks=pytest.mark.gpu)]


@pytest.fixture(params=BACKENDS)
def device(request):
    """The name of a device backend to compare with NumPy (cupy: only with a device)."""
    if request.param == "cupy" and not cuda_available():
        pytest.skip("no CUDA device with CuPy here")
    return request.param


_RUNS = {}


def recipe(family, objective):
    """(config, model class, collator, examples) of a tiny run, built once per session."""
    if (family, objective) not in _RUNS:
        run = build_run(family, "tiny", objective, max_chars=30_000, block_size=16,
                        vocab_size=400, log=lambda _: None)
        _RUNS[family, objective] = (run.model.config, type(run.model), run.collator,
                                    run.train[:8])
    return _RUNS[family, objective]


def model_on(name, family, objective, seed=0):
    """The recipe's model built on backend `name` (run it under backend.selected(name))."""
    config, cls, _, _ = recipe(family, objective)
    with backend.selected(name):
        return cls(config, seed=seed)


def batch(family, objective):
    _, _, collator, examples = recipe(family, objective)
    if getattr(collator, "static_seed", None) is not None:
        return collator(list(examples[:4]), np.random.default_rng(0), indices=np.arange(4))
    return collator(list(examples[:4]), np.random.default_rng(0))


def close(a, b, tol=2e-5):
    np.testing.assert_allclose(to_numpy(a), to_numpy(b), rtol=tol, atol=tol)


@pytest.mark.parametrize("family,objective", RUNS, ids=[f"{f}-{o}" for f, o in RUNS])
def test_loss_gradients_and_training_steps_equal_numpys(family, objective, device):
    models = {name: model_on(name, family, objective) for name in ("numpy", device)}
    data = batch(family, objective)
    for name, model in models.items():
        assert backend.array_module(next(iter(model.parameters())).data).__name__.startswith(
            name), name
        model.train()
        with backend.selected(name):
            model(**data).loss.backward()
    ours, theirs = (dict(m.named_parameters()) for m in models.values())
    for key, p in ours.items():
        close(theirs[key].grad, p.grad, tol=1e-4)
    losses = {}
    for name, model in models.items():
        config = TrainConfig(steps=2, batch_size=4, warmup_steps=1, eval_every=0,
                             clip_grad_norm=0.5, log_every=1, seed=0)
        _, _, collator, examples = recipe(family, objective)
        with backend.selected(name):
            history = Trainer(model, collator, examples, None, config).fit()
        losses[name] = [r["loss"] for r in history if "loss" in r]
    np.testing.assert_allclose(losses[device], losses["numpy"], rtol=1e-4)


CAUSAL = [r for r in RUNS if r[1] == "clm"]


@pytest.mark.parametrize("family,objective", CAUSAL, ids=[f for f, _ in CAUSAL])
def test_cached_generation_and_beam_search_equal_numpys(family, objective, device):
    ids = np.asarray(recipe(family, objective)[3][:2, :5])
    out = {}
    for name in ("numpy", device):
        model = model_on(name, family, objective).eval()
        with backend.selected(name):
            out[name] = (model.generate(ids, 6, temperature=0),
                         model.generate(ids, 6, temperature=0.8, top_k=20, top_p=0.9,
                                        seed=3),
                         model.generate(ids, 5, num_beams=3, num_return_sequences=2,
                                        temperature=0))
    for a, b in zip(out["numpy"], out[device]):
        np.testing.assert_array_equal(a, b)


def test_glm_fill_blank_equals_numpys(device):
    from npplm.models.glm import fill_blank

    config = recipe("glm", "blank")[0]
    part_a = np.array([[5, 6, config.mask_token_id, 7], [8, config.gmask_token_id, 9, 10]])
    out = {}
    for name in ("numpy", device):
        model = model_on(name, "glm", "blank").eval()
        with backend.selected(name):
            out[name] = (fill_blank(model, part_a, 5),
                         fill_blank(model, part_a, 4, num_beams=2))
    assert out["numpy"] == out[device]


def test_t5_generation_equals_numpys(device):
    ids = np.asarray(recipe("t5", "span")[3][:2, :8])
    out = {}
    for name in ("numpy", device):
        model = model_on(name, "t5", "span").eval()
        with backend.selected(name):
            out[name] = (model.generate(ids, max_new_tokens=5),
                         model.generate(ids, max_new_tokens=4, num_beams=2))
    for a, b in zip(out["numpy"], out[device]):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("family", list(FAMILIES))
def test_a_checkpoint_saved_on_the_device_loads_back_on_it(family, device, tmp_path):
    import npplm

    objective = next(iter(FAMILIES[family].objectives))
    model = model_on(device, family, objective, seed=2)
    with backend.selected(device):
        model.save_pretrained(tmp_path)
        loaded = npplm.from_pretrained(tmp_path)
        assert backend.is_device_array(next(iter(loaded.parameters())).data)
    for (key, a), (_, b) in zip(model.named_parameters(), loaded.named_parameters()):
        np.testing.assert_array_equal(to_numpy(a.data), to_numpy(b.data), err_msg=key)
