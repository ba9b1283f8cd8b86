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
