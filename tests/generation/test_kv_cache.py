"""KVCache.reorder: what beam search does to the cache after each step."""

import numpy as np
import pytest

from npplm.generation import KVCache


def test_reorder_gathers_the_filled_rows_of_every_layer():
    cache = KVCache(2, 3, 1, 2, 5, np.float32)
    rng = np.random.default_rng(0)
    k = [rng.standard_normal((3, 1, 4, 2)).astype(np.float32) for _ in range(2)]
    v = [rng.standard_normal((3, 1, 4, 2)).astype(np.float32) for _ in range(2)]
    for layer in range(2):
        cache.update(layer, k[layer], v[layer])
    cache.advance(4)
    cache.reorder([2, 2, 0])  # rows 0 and 1 now continue row 2; row 2 continues row 0
    for layer in range(2):
        np.testing.assert_array_equal(cache.keys[layer][:, :, :4], k[layer][[2, 2, 0]])
        np.testing.assert_array_equal(cache.values[layer][:, :, :4], v[layer][[2, 2, 0]])
    assert cache.length == 4
    with pytest.raises(ValueError, match=r"rows has shape \(2,\), expected one index per "
                                         r"row, \(3,\)"):
        cache.reorder([0, 1])
