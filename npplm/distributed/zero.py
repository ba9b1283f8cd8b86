"""ZeRO stage 1 (Rajbhandari et al., "ZeRO: Memory Optimizations Toward Training Trillion
Parameter Models", SC 2020, arXiv:1910.02054): each rank keeps the optimizer state of only
1/N of the parameters.

Plain data parallelism keeps AdamW's two moments of every parameter on every rank: 8 bytes
a float32 parameter, twice the model, N times over. ZeRO-1 lays the parameters end to end
as one flat vector of P numbers (padded to N S) and gives rank r the slice
[r S, (r + 1) S), S = ceil(P / N). One update:

    flat_g  <- every parameter's gradient, end to end              (P,)  this rank's sums
    g_r     <- reduce-scatter(flat_g)   rank r's slice of sum_ranks flat_g    (S,)
    ||g||^2 =  sum over ranks of ||g_r||^2                          one scalar all-reduce
    p_r, m_r, v_r <- AdamW(p_r, g_r, m_r, v_r)                      only S moments a rank
    flat_p  <- all-gather(p_r)          every rank gets every updated slice   (N S,)

A reduce-scatter plus an all-gather move the same bytes as one all-reduce (which is
usually implemented as exactly those two), so ZeRO-1 costs no extra communication, and
each rank's moments shrink from 2P to 2P/N numbers. The update is AdamW's own, elementwise
(`AdamW.update` on the slices), so it equals plain data parallelism's: the sum of two
ranks' gradients is the same either way, and only the clipping norm's float64 sum is
added in another order.

Checkpoints hold the whole moments in AdamW's own format (state_arrays gathers them), so a
ZeRO run resumes with or without ZeRO and on another number of ranks.
"""

import numpy as np

from autograd import array_module


class ZeroAdamW:
    """An AdamW (npplm.training.optim) whose moments are sharded over the ranks of `world`.

    It has the optimizer's interface the trainer uses (params, set_lr, zero_grad, step,
    state_arrays, state_meta, load_state) plus reduce_gradients() and clip_grad_norm().
    """

    def __init__(self, optimizer, world):
        if type(optimizer).__name__ != "AdamW":
            raise ValueError(f"ZeRO-1 shards AdamW's moments; got {type(optimizer).__name__}")
        self.inner, self.world = optimizer, world
        self.params, self.param_groups = optimizer.params, optimizer.param_groups
        self.group_of = [g for g in optimizer.param_groups for _ in g["params"]]
        xp = array_module(self.params[0].data)
        dtype = self.params[0].dtype
        self.offsets = np.cumsum([0] + [p.size for p in self.params])
        total, N = int(self.offsets[-1]), world.size
        self.shard = -(-total // N)  # S
        self.lo = world.rank * self.shard
        self.hi = min(self.lo + self.shard, total)
        self.flat = xp.zeros(self.shard * N, dtype)  # gradients in, parameters out
        self.grad = xp.zeros(self.shard, dtype)  # g_r
        self.exp_avg = xp.zeros(self.shard, dtype)  # m_r
        self.exp_avg_sq = xp.zeros(self.shard, dtype)  # v_r
        # (parameter index, [a, b) within the parameter, [s, s + b - a) within the shard)
        self.pieces = []
        for i in range(len(self.params)):
            a = max(self.lo, int(self.offsets[i]))
            b = min(self.hi, int(self.offsets[i + 1]))
            if a < b:
                start = int(self.offsets[i])
                self.pieces.append((i, a - start, b - start, a - self.lo))
        self.has_grad = [False] * len(self.params)

    @property
    def t(self):
        return self.inner.t

    @property
    def state_nbytes(self):
        """Bytes of optimizer state on this rank (the two moment slices)."""
        return self.exp_avg.nbytes + self.exp_avg_sq.nbytes

    def set_lr(self, lr):
        self.inner.set_lr(lr)

    def zero_grad(self):
        self.inner.zero_grad()

    def reduce_gradients(self):
        """flat_g of this rank, then reduce-scatter: self.grad is this rank's slice of the
        sum over ranks. A parameter without a gradient counts as zeros and is not updated
        (as AdamW skips it)."""
        for i, p in enumerate(self.params):
            a, b = int(self.offsets[i]), int(self.offsets[i + 1])
            self.has_grad[i] = p.grad is not None
            self.flat[a:b] = 0 if p.grad is None else p.grad.reshape(-1)
        self.world.reduce_scatter(self.flat, self.grad)

    def clip_grad_norm(self, max_norm):
        """The global norm from every rank's slice; this rank's slice scaled as
        optim.clip_grad_norm scales whole gradients. Returns the norm before clipping."""
        local = self.grad[:self.hi - self.lo].astype(np.float64)
        total = float(np.sqrt(self.world.sum(float((local * local).sum()))))
        if max_norm is not None and np.isfinite(total):
            scale = max_norm / (total + 1e-6)
            if scale < 1.0:
                self.grad *= scale
        return total

    def step(self):
        """AdamW on this rank's slice, then every rank gathers every slice."""
        self.inner.t += 1
        for i, a, b, s in self.pieces:
            if not self.has_grad[i]:
                continue
            p = self.params[i].data.reshape(-1)[a:b]
            self.inner.update(self.group_of[i], p, self.grad[s:s + b - a],
                              self.exp_avg[s:s + b - a], self.exp_avg_sq[s:s + b - a])
        mine = self.flat[self.world.rank * self.shard:(self.world.rank + 1) * self.shard]
        for i, a, b, s in self.pieces:
            mine[s:s + b - a] = self.params[i].data.reshape(-1)[a:b]
        self.world.allgather(mine.copy(), self.flat)
        for i, p in enumerate(self.params):
            p.data[...] = self.flat[self.offsets[i]:self.offsets[i + 1]].reshape(p.shape)

    # --- checkpoints: AdamW's own format, the whole moments --------------------------------
    def _gathered(self, shard):
        full = array_module(shard).empty(self.shard * self.world.size, shard.dtype)
        return self.world.allgather(shard, full)

    def state_arrays(self):
        """AdamW's state_arrays of the whole moments (every rank must call it: a gather)."""
        from autograd import to_numpy

        m, v = (to_numpy(self._gathered(x)) for x in (self.exp_avg, self.exp_avg_sq))
        if self.inner.t == 0:
            return {}
        out = {}
        for i in range(len(self.params)):
            a, b = int(self.offsets[i]), int(self.offsets[i + 1])
            shape = self.params[i].shape
            out[f"{i}.exp_avg"] = m[a:b].reshape(shape)
            out[f"{i}.exp_avg_sq"] = v[a:b].reshape(shape)
        return out

    def state_meta(self):
        return self.inner.state_meta()

    def load_state(self, arrays, meta):
        """AdamW's checkpoint (whole moments): keep this rank's slice."""
        self.inner.load_state(arrays, meta)
        for i, a, b, s in self.pieces:
            state = self.inner.state[i]
            if state:
                self.exp_avg[s:s + b - a] = state["exp_avg"].reshape(-1)[a:b]
                self.exp_avg_sq[s:s + b - a] = state["exp_avg_sq"].reshape(-1)[a:b]
        self.inner.state = [{} for _ in self.params]  # the whole copies are not kept
