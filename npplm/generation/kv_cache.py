"""The key/value cache of autoregressive decoding, in floats or in int8 codes.

Generating token t+1 needs attention over the keys and values of tokens 0..t. Recomputing
them for the whole prefix at every step costs O(T^2) projections over a generation; caching
them costs memory instead: each layer keeps its keys and values, (B, K, S, D), and a new
token adds one position. With grouped-query attention only the K = n_kv_heads heads are
stored (not the H query heads), which is the point of GQA/MQA: LLaMA-2-70B keeps 8 heads
of 128 dims per layer instead of 64.

The cache holds raw arrays (decoding runs under `no_grad`), preallocated for `max_length`
positions so that a step writes into place instead of concatenating. Its size:
    nbytes = 2 (keys and values) x B x L x length x K x D x bytes per value
Besides the weights, this is the memory inference pays for, and it grows with the batch and
the length. GQA shrinks K; quantisation shrinks the bytes per value:

    KVCache       floats, in the model's dtype or one asked for: 4 bytes per value
                  (float32) or 2 (float16)
    Int8KVCache   every cached vector (one row, one head, one token: D numbers) as int8
                  codes with one float16 scale (`quantize_int8`): 1 + 2/D bytes per value.
                  At D = 64 (SmolLM2, GPT-2): 1.03125 bytes, 0.516x a float16 cache and
                  0.258x a float32 one; at D = 128 (LLaMA-2/3): 0.508x and 0.254x.
                  float32 scales would cost 1 + 4/D (0.531x float16 at D = 64) and leave
                  the same errors: on SmolLM2's keys and values their rms differs by 0.1%.

The int8 rule is absmax ("vector-wise") quantisation as in LLM.int8() (Dettmers et al.,
arXiv:2208.07339), one scale per key or value vector; llama.cpp's q8_0 cache
(`--cache-type-k q8_0`) applies the same rule to blocks of 32 numbers. Keys lose more than
values (on SmolLM2 an rms error of 1.1% of their rms, against 0.66%): a few channels of
every key are large, and they set its scale. Below 8 bits this calls for per-channel key
scales (KIVI, arXiv:2402.02750); at 8 bits per-token scales lose little. SmolLM2-135M-
Instruct reading 1024 tokens of held-out prose through the cache, 64 at a time: perplexity
9.080 with float32, 9.100 with int8 (mean of five rounding realisations, +0.07% to +0.33%),
98.6% of next-token argmaxes unchanged (benchmarks/kv_cache_int8.py).

The int8 cache stores codes and returns dequantised floats, so the attention code does not
change. The one-call decoding step of quantised LLaMA-family models
(gpu/numba_cpu/decoding.py) reads and writes the codes itself (`kernel_arrays`), quantising
as `quantize_int8` does, without a layer's dequantised (B, K, S, D) copy.

`new_kv_cache(kv_cache_dtype, ...)` builds the one a user names: None (the model's
dtype), "float16", "float32" or "int8" (`KV_CACHE_DTYPES`); models call it through
`PreTrainedModel.new_cache(batch_size, max_length, dtype)` and `generate` through its
`kv_cache_dtype` option.
"""

import numpy

from autograd import array_module, as_array

KV_CACHE_DTYPES = ("float16", "float32", "int8")  # and None: the model's own dtype


def quantize_int8(x, scale_dtype=numpy.float16):
    """Absmax int8 codes of each vector along the last axis, and its scale.

        s   = max_i |x_i| / 127, rounded UP to scale_dtype
        q_i = round(x_i / s)                      an integer in [-127, 127]
        x_hat_i = q_i s                           (dequantize_int8)
        |x_i - x_hat_i| <= s / 2

    Rounding s up keeps every |x_i| / s <= 127, so no code is ever clipped and the bound
    holds for the scale actually stored. float16 rounds up by less than 2^-10 relative
    (2^-24 absolute among its subnormals, where a tiny vector still gets a scale > 0):
    s <= max|x| / 127 (1 + 2^-10) + 2^-24, about 0.4% of the vector's largest entry for
    the error. -127 and not -128 is the lowest code, so the range is symmetric. An all-zero
    vector gets s = 0 and codes 0. float16 holds scales up to 65504, so vectors up to
    max|x| = 8.3e6 (keys and values are O(1) to O(100)); beyond, OverflowError.
    x (..., D) float -> codes (..., D) int8, scales (...) scale_dtype.
    """
    xp = array_module(x)
    wide = xp.result_type(x.dtype, xp.float32)  # x / s to well below half a code step
    x = x.astype(wide, copy=False)
    exact = xp.abs(x).max(axis=-1, keepdims=True) / 127  # (..., D) -> (..., 1)
    if exact.size and float(exact.max()) > float(numpy.finfo(scale_dtype).max):
        raise OverflowError(f"a cached vector has max|x| = {float(exact.max()) * 127:.3g}, "
                            f"beyond what a {numpy.dtype(scale_dtype).name} scale holds: "
                            "use a float KV cache")
    scales = exact.astype(scale_dtype)
    # Round up: a positive float's successor has the next integer bit pattern (0 -> the
    # smallest subnormal).
    bits = numpy.dtype(f"int{8 * numpy.dtype(scale_dtype).itemsize}")
    successor = (scales.view(bits) + 1).view(scale_dtype)
    scales = xp.where(scales.astype(wide) < exact, successor, scales)
    step = xp.where(scales > 0, scales, 1).astype(wide)  # all-zero vectors: codes 0
    codes = xp.clip(xp.rint(x / step), -127, 127)  # (..., D); the clip guards rounding only
    return codes.astype(xp.int8), scales[..., 0]


def dequantize_int8(codes, scales, dtype):
    """x_hat = q s in `dtype`: codes (..., D) int8 and scales (...) -> (..., D).
    Within s/2 of what quantize_int8 was given, entry by entry."""
    return codes.astype(dtype) * scales.astype(dtype)[..., None]


def new_kv_cache(kv_cache_dtype, n_layers, batch, n_kv_heads, head_dim, max_length, dtype,
                 xp=None):
    """The cache `kv_cache_dtype` names, for a model computing in `dtype`:
    None -> KVCache in `dtype`; "float16" / "float32" -> KVCache in that float (its
    update returns that dtype); "int8" -> Int8KVCache (update returns `dtype`)."""
    if kv_cache_dtype is not None and not (isinstance(kv_cache_dtype, str)
                                           and kv_cache_dtype in KV_CACHE_DTYPES):
        raise ValueError(f"kv_cache_dtype={kv_cache_dtype!r} must be None (the model's "
                         f"dtype) or one of {', '.join(map(repr, KV_CACHE_DTYPES))}")
    if kv_cache_dtype == "int8":
        return Int8KVCache(n_layers, batch, n_kv_heads, head_dim, max_length, dtype, xp=xp)
    dtype = dtype if kv_cache_dtype is None else kv_cache_dtype
    return KVCache(n_layers, batch, n_kv_heads, head_dim, max_length, dtype, xp=xp)


class KVCache:
    """Per-layer keys and values for `max_length` positions; `length` of them filled.

        keys, values  per layer, (B, K, S_max, D) in `dtype`
    Every array a cache holds (`_arrays`) has the axes (B, K, S_max) first, so reorder,
    rows and stacked, which move rows and positions, serve the int8 cache unchanged; a
    storage says only how it allocates (`_allocate`), writes (`_store`) and reads (`_load`).
    """

    def __init__(self, n_layers, batch, n_kv_heads, head_dim, max_length, dtype, xp=None):
        xp = numpy if xp is None else xp
        self.shape = (batch, n_kv_heads, max_length, head_dim)  # (B, K, S_max, D)
        self.n_layers = n_layers
        self.dtype = numpy.dtype(dtype)  # of the keys and values update returns
        self.max_length = max_length
        self.length = 0  # positions filled, the same in every layer once a step is done
        self._written = [0] * n_layers
        self._allocate(xp)

    def _allocate(self, xp):
        self.keys = [xp.zeros(self.shape, dtype=self.dtype) for _ in range(self.n_layers)]
        self.values = [xp.zeros(self.shape, dtype=self.dtype) for _ in range(self.n_layers)]

    def _arrays(self):
        """Every array held, (B, K, S_max, ...) each, in an order every cache of the class
        shares (rows and stacked copy them pairwise)."""
        return [*self.keys, *self.values]

    def _store(self, layer, start, k, v):
        """Write k, v (B, K, T, D) at positions start..start+T of `layer`."""
        T = k.shape[2]
        self.keys[layer][:, :, start:start + T] = k
        self.values[layer][:, :, start:start + T] = v

    def _load(self, layer, n):
        """The keys and values of positions 0..n of `layer`, (B, K, n, D) each (views)."""
        return self.keys[layer][:, :, :n], self.values[layer][:, :, :n]

    def update(self, layer, k, v):
        """Append k, v (B, K, T, D) at positions length..length+T of `layer`; return the
        keys and values of every position so far, (B, K, length + T, D) each, in dtype."""
        k, v = as_array(k), as_array(v)
        start, T = self.length, k.shape[2]
        if start + T > self.max_length:
            raise ValueError(f"KV cache full: {start} cached + {T} new positions exceed its "
                             f"max_length {self.max_length}")
        self._store(layer, start, k, v)
        self._written[layer] = start + T
        return self._load(layer, start + T)

    def kernel_arrays(self, layer):
        """`layer`'s keys and values as gpu/numba_cpu/decoding.py's step reads and writes
        them: (keys,), (values,)."""
        return (self.keys[layer],), (self.values[layer],)

    def stored_by_kernel(self, layer, T):
        """Mark T new positions of `layer` as written by a kernel that stores into
        keys[layer] and values[layer] itself (gpu/numba_cpu/decoding.py), as update would."""
        if self.length + T > self.max_length:
            raise ValueError(f"KV cache full: {self.length} cached + {T} new positions exceed "
                             f"its max_length {self.max_length}")
        self._written[layer] = self.length + T

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
        rows = self.xp.asarray(rows)
        if rows.shape != (self.shape[0],):
            raise ValueError(f"KV cache reorder: rows has shape {tuple(rows.shape)}, expected "
                             f"one index per row, ({self.shape[0]},)")
        n = self.length
        for cached in self._arrays():  # (B, K, S_max, ...): the filled part only
            cached[:, :, :n] = cached[rows, :, :n]

    def rows(self, keep, start=0):
        """A new cache of the rows `keep` (indices) and the filled positions start..length,
        with the same room after them: continuous batching drops the rows of finished
        sequences, and the columns before `start`, which every kept row has as padding."""
        xp, (_, K, S, D) = self.xp, self.shape
        keep = xp.asarray(keep)
        out = type(self)(self.n_layers, len(keep), K, D, S - start, self.dtype, xp=xp)
        n = self.length - start
        for a, b in zip(self._arrays(), out._arrays()):
            b[:, :, :n] = a[keep, :, start:self.length]
        out.length, out._written = n, [n] * self.n_layers
        return out

    @classmethod
    def stacked(cls, caches, max_length):
        """One cache holding the rows of `caches` (one after another), each right-aligned to
        the longest filled length L, so the shorter ones are padded on the LEFT (their masks
        must be too); room for max_length >= L positions. Continuous batching adds a newly
        prefilled sequence to the running batch this way."""
        if any(type(c) is not cls for c in caches):
            raise ValueError(f"KV cache stack: every cache must be a {cls.__name__}, got "
                             f"{[type(c).__name__ for c in caches]}")
        first = caches[0]
        _, K, _, D = first.shape
        L = max(c.length for c in caches)
        if max_length < L:
            raise ValueError(f"KV cache stack: max_length {max_length} < the longest filled "
                             f"length {L}")
        out = cls(first.n_layers, sum(c.shape[0] for c in caches), K, D, max_length,
                  first.dtype, xp=first.xp)
        row = 0
        for c in caches:
            B, n = c.shape[0], c.length
            for a, b in zip(c._arrays(), out._arrays()):
                b[row:row + B, :, L - n:L] = a[:, :, :n]
            row += B
        out.length, out._written = L, [L] * first.n_layers
        return out

    @property
    def nbytes(self):
        """Bytes held for the filled part: 2 x B x L x length x K x D x itemsize for floats;
        for Int8KVCache 2 x B x L x length x K x (D + scale itemsize)."""
        return sum(a[:, :, :self.length].nbytes for a in self._arrays())

    @property
    def xp(self):
        return array_module(self._arrays()[0])


class Int8KVCache(KVCache):
    """A KVCache keeping each key and value vector as int8 codes and one scale.

        key_codes, value_codes    per layer, (B, K, S_max, D) int8
        key_scales, value_scales  per layer, (B, K, S_max) float16: one per (row, head,
                                  token), s = max|x| / 127 of that vector (quantize_int8)
    update quantises the new positions into place and returns every position so far
    dequantised in `dtype` (the model's), (B, K, length + T, D) each: new arrays, within
    s/2 of what was written, entry by entry. Only one layer's float copy exists at a time.
    """

    scale_dtype = numpy.float16  # float32: 2/D bytes more per value, the same errors

    def _allocate(self, xp):
        B, K, S, _ = self.shape
        self.key_codes = [xp.zeros(self.shape, dtype=xp.int8) for _ in range(self.n_layers)]
        self.value_codes = [xp.zeros(self.shape, dtype=xp.int8) for _ in range(self.n_layers)]
        self.key_scales = [xp.zeros((B, K, S), dtype=self.scale_dtype)
                           for _ in range(self.n_layers)]
        self.value_scales = [xp.zeros((B, K, S), dtype=self.scale_dtype)
                             for _ in range(self.n_layers)]

    def _arrays(self):
        return [*self.key_codes, *self.value_codes, *self.key_scales, *self.value_scales]

    def _store(self, layer, start, k, v):
        T = k.shape[2]
        for codes, scales, x in ((self.key_codes, self.key_scales, k),
                                 (self.value_codes, self.value_scales, v)):
            # (B, K, T, D) -> codes (B, K, T, D) int8, scales (B, K, T)
            q, s = quantize_int8(x, self.scale_dtype)
            codes[layer][:, :, start:start + T], scales[layer][:, :, start:start + T] = q, s

    def kernel_arrays(self, layer):
        """(codes, the scales' bits as uint16) of the keys and of the values: the decoding
        step (gpu/numba_cpu/decoding.py) quantises into them as `_store` does."""
        def bits(scales):  # other scale dtypes go as they are (the step takes only float16)
            return scales.view(numpy.uint16) if scales.dtype == numpy.float16 else scales
        return ((self.key_codes[layer], bits(self.key_scales[layer])),
                (self.value_codes[layer], bits(self.value_scales[layer])))

    def _load(self, layer, n):
        return (dequantize_int8(self.key_codes[layer][:, :, :n],
                                self.key_scales[layer][:, :, :n], self.dtype),
                dequantize_int8(self.value_codes[layer][:, :, :n],
                                self.value_scales[layer][:, :, :n], self.dtype))
