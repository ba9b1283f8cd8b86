"""The key/value cache of autoregressive decoding.

Generating token t+1 needs attention over the keys and values of tokens 0..t. Recomputing
them for the whole prefix at every step costs O(T^2) projections over a generation; caching
them costs memory instead: each layer keeps its keys and values, (B, K, S, D), and a new
token adds one position. With grouped-query attention only the K = n_kv_heads heads are
stored (not the H query heads), which is the point of GQA/MQA: LLaMA-2-70B keeps 8 heads
of 128 dims per layer instead of 64.

The cache holds raw arrays (decoding runs under `no_grad`), preallocated for `max_length`
positions so that a step writes into place instead of concatenating. Its size:
    nbytes = 2 (keys and values) x B x L x length x K x D x bytes per value
"""

from autograd import array_module, as_array


class KVCache:
    """Per-layer keys and values for `max_length` positions; `length` of them filled."""

    def __init__(self, n_layers, batch, n_kv_heads, head_dim, max_length, dtype, xp=None):
        import numpy

        xp = numpy if xp is None else xp
        shape = (batch, n_kv_heads, max_length, head_dim)  # (B, K, S_max, D)
        self.keys = [xp.zeros(shape, dtype=dtype) for _ in range(n_layers)]
        self.values = [xp.zeros(shape, dtype=dtype) for _ in range(n_layers)]
        self.max_length = max_length
        self.length = 0  # positions filled, the same in every layer once a step is done
        self._written = [0] * n_layers

    def update(self, layer, k, v):
        """Append k, v (B, K, T, D) at positions length..length+T of `layer`; return the
        keys and values of every position so far, (B, K, length + T, D) each (views)."""
        k, v = as_array(k), as_array(v)
        start, T = self.length, k.shape[2]
        if start + T > self.max_length:
            raise ValueError(f"KV cache full: {start} cached + {T} new positions exceed its "
                             f"max_length {self.max_length}")
        self.keys[layer][:, :, start:start + T] = k
        self.values[layer][:, :, start:start + T] = v
        self._written[layer] = start + T
        return self.keys[layer][:, :, :start + T], self.values[layer][:, :, :start + T]

    def advance(self, T):
        """Mark T new positions as filled (call once per forward pass, after every layer)."""
        if any(w != self.length + T for w in self._written):
            raise RuntimeError(f"KV cache: layers were written up to {self._written}, "
                               f"expected all at {self.length + T}")
        self.length += T

    def reorder(self, rows):
        """Keep row rows[i] of every layer as the new row i, (B,) integer indices.

        Beam search calls this after each step: a surviving beam may extend another beam's
        prefix, so the keys and values it attends to must be that prefix's (a gather along
        the batch axis; the filled length does not change)."""
        xp = self.xp
        rows = xp.asarray(rows)
        if rows.shape != (self.keys[0].shape[0],):
            raise ValueError(f"KV cache reorder: rows has shape {tuple(rows.shape)}, expected "
                             f"one index per row, ({self.keys[0].shape[0]},)")
        n = self.length
        for cached in (*self.keys, *self.values):  # (B, K, S_max, D): the filled part only
            cached[:, :, :n] = cached[rows, :, :n]

    def rows(self, keep, start=0):
        """A new cache of the rows `keep` (indices) and the filled positions start..length,
        with the same room after them: continuous batching drops the rows of finished
        sequences, and the columns before `start`, which every kept row has as padding."""
        xp, (_, K, S, D) = self.xp, self.keys[0].shape
        keep = xp.asarray(keep)
        out = KVCache(len(self.keys), len(keep), K, D, S - start, self.keys[0].dtype, xp=xp)
        n = self.length - start
        for mine, theirs in ((self.keys, out.keys), (self.values, out.values)):
            for a, b in zip(mine, theirs):
                b[:, :, :n] = a[keep, :, start:self.length]
        out.length, out._written = n, [n] * len(self.keys)
        return out

    @classmethod
    def stacked(cls, caches, max_length):
        """One cache holding the rows of `caches` (one after another), each right-aligned to
        the longest filled length L, so the shorter ones are padded on the LEFT (their masks
        must be too); room for max_length >= L positions. Continuous batching adds a newly
        prefilled sequence to the running batch this way."""
        first = caches[0]
        _, K, _, D = first.keys[0].shape
        L = max(c.length for c in caches)
        if max_length < L:
            raise ValueError(f"KV cache stack: max_length {max_length} < the longest filled "
                             f"length {L}")
        out = cls(len(first.keys), sum(c.keys[0].shape[0] for c in caches), K, D, max_length,
                  first.keys[0].dtype, xp=first.xp)
        row = 0
        for c in caches:
            B, n = c.keys[0].shape[0], c.length
            for mine, theirs in ((c.keys, out.keys), (c.values, out.values)):
                for a, b in zip(mine, theirs):
                    b[row:row + B, :, L - n:L] = a[:, :, :n]
            row += B
        out.length, out._written = L, [L] * len(first.keys)
        return out

    @property
    def nbytes(self):
        """Bytes of the filled part: 2 x B x L x length x K x D x itemsize."""
        B, K, _, D = self.keys[0].shape
        return 2 * B * len(self.keys) * self.length * K * D * self.keys[0].dtype.itemsize

    @property
    def xp(self):
        return array_module(self.keys[0])
