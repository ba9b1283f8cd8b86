"""Data parallelism and ZeRO-1 on 2 MPI ranks against one process (tests/distributed/ranks.py
runs the ranks; this side compares what they wrote)."""

import json

import numpy as np
import pytest

from npplm.distributed import shard_rows, shard_weights
from npplm.io import read_safetensors
from tests.distributed.mpi import run_ranks

CASES = ("clm", "clm_accum", "mlm", "mlm_accum", "clm_zero", "mlm_zero", "clm_checkpointed")


@pytest.fixture(scope="module")
def exactness(tmp_path_factory):
    out = tmp_path_factory.mktemp("exactness")
    run_ranks(["-m", "tests.distributed.ranks", "exactness", out])
    return (json.loads((out / "exactness.json").read_text()),
            read_safetensors(out / "exactness.safetensors"))


@pytest.mark.parametrize("case", CASES)
def test_two_ranks_with_half_batches_train_as_one_process(exactness, case):
    """10 updates: the same losses and parameters (float32 rounding), and after every
    update the two ranks hold the same bytes."""
    results, arrays = exactness
    assert results["size"] == 2
    got = results[case]
    assert got["same_on_every_rank"]
    np.testing.assert_allclose(got["losses"], got["one_process"], rtol=0, atol=1e-5)
    assert len(got["losses"]) == 10
    names = [k.split("/", 2)[2] for k in arrays if k.startswith(f"{case}/ranks/")]
    assert names
    for name in names:
        np.testing.assert_allclose(np.asarray(arrays[f"{case}/ranks/{name}"]),
                                   np.asarray(arrays[f"{case}/one/{name}"]), rtol=0, atol=1e-5,
                                   err_msg=f"{case}: {name}")


@pytest.mark.parametrize("zero, plain", [("clm_zero", "clm"), ("mlm_zero", None)])
def test_zero1_equals_plain_data_parallel_with_half_the_optimizer_memory(exactness, zero, plain):
    results, arrays = exactness
    if plain is not None:
        np.testing.assert_allclose(results[zero]["losses"], results[plain]["losses"], rtol=0,
                                   atol=1e-6)
        for key in (k for k in arrays if k.startswith(f"{plain}/ranks/")):
            np.testing.assert_allclose(np.asarray(arrays[key.replace(plain, zero, 1)]),
                                       np.asarray(arrays[key]), rtol=0, atol=1e-6)
    # two float32 moments of half the parameters (the shard rounds up by at most one)
    n_params = results[zero]["n_params"]
    assert n_params > 10_000 and results[zero]["state_bytes"] == 8 * -(-n_params // 2)


def test_bucketed_all_reduce_equals_one_flat_all_reduce(exactness):
    buckets = exactness[0]["buckets"]
    assert buckets["n_buckets"] > 2 and buckets["nonzero"] and buckets["equal"]


def test_shards_cover_the_batch_once_in_order():
    for n in range(2, 12):
        for size in range(1, n + 1):
            rows = [shard_rows(n, r, size) for r in range(size)]
            assert rows[0][0] == 0 and rows[-1][1] == n
            assert all(a[1] == b[0] for a, b in zip(rows, rows[1:]))
            assert max(h - l for l, h in rows) - min(h - l for l, h in rows) <= 1
    with pytest.raises(ValueError, match="cannot be split over 4 ranks"):
        shard_rows(3, 0, 4)


def test_shard_weights_are_each_shards_share_of_every_scored_token():
    def batch(labels):
        return {"input_ids": np.zeros_like(labels), "labels": np.array(labels)}

    full = [batch([[1, -100], [1, 1]]), batch([[-100, -100], [1, 1]])]
    shards = [batch([[1, -100]]), batch([[-100, -100]])]
    count = lambda b: int((b["labels"] != -100).sum())  # noqa: E731
    assert shard_weights(full, shards, count, False) == [1 / 5, 0 / 5]
    assert shard_weights(full, shards, count, True) == [1 / 4, 1 / 4]  # rows instead
