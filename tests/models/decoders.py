"""What the decoder-only families' parity tests share: a left-padded batch (LLaMA, Qwen2),
and tiny transformers checkpoints saved once per test module (GPT too)."""

import numpy as np

B, T = 3, 9
LENGTHS = np.array([9, 6, 3])  # a left-padded batch: rows of 9, 6 and 3 real tokens


def left_padded_batch(seed=0, pad=0):
    """(ids, mask, labels, positions), each (B, T): real tokens right-aligned."""
    rng = np.random.default_rng(seed)
    mask = (np.arange(T) >= T - LENGTHS[:, None]).astype(np.int64)  # (B, T), zeros first
    ids = np.where(mask == 1, rng.integers(1, 64, (B, T)), pad)
    labels = np.where(mask == 1, ids, -100)
    positions = np.where(mask == 1, np.cumsum(mask, -1) - 1, 1)  # as HF's generate
    return ids, mask, labels, positions


def saved_checkpoints(tmp_path_factory, build):
    """get(case_id) -> (transformers model, the folder it was saved to), built by
    build(case_id) once per case."""
    built = {}

    def get(case_id):
        if case_id not in built:
            model = build(case_id)
            path = tmp_path_factory.mktemp(case_id)
            model.save_pretrained(path)
            built[case_id] = model, path
        return built[case_id]

    return get


def randomise(model):
    """Weights and biases of scale 0.2, norm gains 1 +- 0.1, ties kept: every bias nonzero,
    so a bias read into the wrong place or left out fails. `model`: a transformers model."""
    import torch

    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=g)
            p.copy_(1 + 0.1 * noise if name.endswith("norm.weight") else 0.2 * noise)
    return model.eval()


def max_diff(a, b):
    return float(np.max(np.abs(np.asarray(a) - np.asarray(b))))


def check_causal_lm_parity(hf, ours, padded, label):
    """Logits, loss and every parameter's gradient of our causal LM against the transformers
    model it was loaded from, on the left-padded batch (padded) or its ids unpadded. Returns
    our parameters by name (their gradients set) for the family's own checks."""
    import torch

    from tests.tolerances import assert_close

    ids, mask, labels, positions = left_padded_batch()
    if padded:
        kwargs = dict(attention_mask=mask, labels=labels)
        hf_out = hf(torch.tensor(ids), attention_mask=torch.tensor(mask),
                    position_ids=torch.tensor(positions), labels=torch.tensor(labels))
    else:
        kwargs = dict(labels=ids)
        hf_out = hf(torch.tensor(ids), labels=torch.tensor(ids))
    out = ours(ids, **kwargs)
    assert out.logits.dtype == np.float32  # float32 in, float32 out
    real = mask == 1 if padded else np.ones((B, T), bool)  # pad queries' logits: garbage
    got, want = out.logits.numpy()[real], hf_out.logits.detach().numpy()[real]
    assert_close(got, want, "model32")
    assert_close(out.loss, hf_out.loss.detach().numpy(), "model32")

    hf.zero_grad()  # the transformers model is shared between tests
    hf_out.loss.backward()
    out.loss.backward()
    hf_params = dict(hf.named_parameters(remove_duplicate=False))
    assert set(ours.state_dict()) | {"lm_head.weight"} == set(hf_params) | {"lm_head.weight"}
    params = dict(ours.named_parameters())
    assert all(p.grad is not None and p.grad.dtype == np.float32 for p in params.values())
    scale = max(float(hf_params[n].grad.abs().max()) for n in params)
    for name, p in params.items():
        assert_close(p.grad, hf_params[name].grad.numpy(), "model_grad32", scale=scale)
    grad_err = max(max_diff(p.grad, hf_params[n].grad.numpy()) for n, p in params.items())
    print(f"\n{label} {'padded' if padded else 'full'}: max |logits diff| = "
          f"{max_diff(got, want):.2e}, max |grad diff| = {grad_err:.2e} "
          f"(largest grad {scale:.2e})")
    return params
