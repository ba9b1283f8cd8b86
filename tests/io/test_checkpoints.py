"""safetensors reading and writing: dtypes, truncation, pickles refused, atomic writes."""

import json
import os

import numpy as np
import pytest
from safetensors.numpy import save_file

import npplm
from npplm.io import CheckpointError, read_safetensors, read_weights, write_safetensors


def test_round_trip_keeps_dtypes_and_values(tmp_path):
    state = {"a": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.arange(3)}
    write_safetensors(state, tmp_path / "model.safetensors")
    back = read_safetensors(tmp_path / "model.safetensors")
    assert back["a"].dtype == np.float32 and back["b"].dtype == np.int64
    np.testing.assert_array_equal(back["a"], state["a"])
    assert [p.name for p in tmp_path.iterdir()] == ["model.safetensors"]  # no temp left


def test_float16_widens_to_float32(tmp_path):
    save_file({"w": np.array([1.5, -2.25], dtype=np.float16)}, tmp_path / "m.safetensors")
    w = read_safetensors(tmp_path / "m.safetensors")["w"]
    assert w.dtype == np.float32 and w.tolist() == [1.5, -2.25]


def test_bfloat16_is_read_as_the_top_half_of_float32(tmp_path):
    torch = pytest.importorskip("torch")
    from safetensors.torch import save_file as save_torch

    values = torch.tensor([1.0, -3.140625, 1e-3, 65280.0], dtype=torch.bfloat16)
    save_torch({"w": values, "x": torch.ones(2)}, str(tmp_path / "m.safetensors"))
    out = read_safetensors(tmp_path / "m.safetensors")
    assert out["w"].dtype == np.float32
    np.testing.assert_array_equal(out["w"], values.float().numpy())
    np.testing.assert_array_equal(out["x"], [1.0, 1.0])


def test_truncated_file_is_named(tmp_path):
    path = tmp_path / "model.safetensors"
    write_safetensors({"w": np.zeros(1000, dtype=np.float32)}, path)
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(CheckpointError, match="truncated: the tensors need"):
        read_safetensors(path)
    path.write_bytes(b"\x01\x02")
    with pytest.raises(CheckpointError, match="truncated: 2 bytes"):
        read_safetensors(path)


def test_pickles_are_refused_with_a_conversion_hint(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}))
    (tmp_path / "pytorch_model.bin").write_bytes(b"not even a real pickle")
    with pytest.raises(CheckpointError, match="pickle checkpoint.*Convert it to safetensors"):
        read_weights(tmp_path)
    with pytest.raises(CheckpointError, match="pickle"):
        npplm.from_pretrained(tmp_path / "pytorch_model.bin")


def test_missing_pieces_are_named(tmp_path):
    with pytest.raises(CheckpointError, match="has no config.json"):
        npplm.from_pretrained(tmp_path)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        npplm.from_pretrained(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "mystery"}))
    with pytest.raises(CheckpointError, match="unsupported model.*'mystery'"):
        npplm.from_pretrained(tmp_path)
    with pytest.raises(CheckpointError, match="no model.safetensors"):
        read_weights(tmp_path)


def test_sharded_checkpoints_are_joined(tmp_path):
    write_safetensors({"a": np.ones(2, dtype=np.float32)}, tmp_path / "s1.safetensors")
    write_safetensors({"b": np.zeros(3, dtype=np.float32)}, tmp_path / "s2.safetensors")
    index = {"weight_map": {"a": "s1.safetensors", "b": "s2.safetensors"}}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(index))
    state = read_weights(tmp_path)
    assert sorted(state) == ["a", "b"]


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_saved_files_honour_the_umask(tmp_path, umask):
    from npplm.models.gpt import GPT2LMHeadModel, GPTConfig
    from npplm.tokenizers import train_byte_level_bpe

    previous = os.umask(umask)
    try:
        GPT2LMHeadModel(GPTConfig.tiny(), seed=0).save_pretrained(tmp_path / "m")
        train_byte_level_bpe(["def f(): pass\n"] * 5, 270).save(tmp_path / "m")
    finally:
        os.umask(previous)
    for name in ("model.safetensors", "config.json", "tokenizer.json", "tokenizer_config.json"):
        mode = (tmp_path / "m" / name).stat().st_mode & 0o777
        assert mode == 0o666 & ~umask, (name, oct(mode))
