"""asv benchmarks of the autograd engine: per-op overhead, large matmul, an MLP training step.

Three questions, one suite each, plus the bare-array reference each answer is judged by:

1. What does the engine cost per primitive? `OpChain` runs 100 small elementwise ops, so
   asv's time divided by 100 is the cost of one op (graph recording, Tensor wrapping and,
   in backward, one VJP call), compared with `OpChainReference`, the same 100 ops on raw
   arrays.
2. Does the engine add anything to big work? `Matmul` is C = A @ B with its backward
   (three GEMMs in all); `MatmulReference` is those three GEMMs on raw arrays. The two
   should agree within about 10%.
3. A whole training step of a small MLP (`MLPStep`), forward, backward and SGD update.

`LinearRows` shows which of two equal products the linear layer should use by row count.

Every suite that can run on the GPU has a `backend` parameter; the "cupy" cases skip
themselves (NotImplementedError in setup, asv's way) where there is no CUDA device, and every
timed call ends with `gpu.synchronize(xp)` so the GPU's queued work is inside the timing.
`peakmem_*` benchmarks measure host memory, so they run on NumPy only.
"""

import numpy as np

import autograd as ag
import gpu
from npplm.layers import cross_entropy

BACKENDS = ["numpy", "cupy"]


def array_module(backend):
    """The array module for a backend parameter; raises NotImplementedError (asv: skip)."""
    if backend == "numpy":
        return np
    if not gpu.cuda_available():
        raise NotImplementedError("no CUDA device with CuPy here")
    import cupy

    return cupy


def as_backend(xp, array):
    """Move a NumPy array to `xp` (arrays are always generated on the host, reproducibly)."""
    return array if xp is np else xp.asarray(array)


# --- 1. per-op overhead -----------------------------------------------------------------------

N_STEPS = 25  # each step is 4 primitives (mul, add, tanh, add): 100 ops per chain
N_OPS = 4 * N_STEPS
SMALL = 16  # elements per tensor: small enough that the arithmetic itself is negligible


def chain(y, w, b, tanh):
    """25 residual steps y = tanh(y * w + b) + y: 100 elementwise ops.

    Works on Tensors (with `tanh=ag.tanh`) and on raw arrays (with `tanh=xp.tanh`), so the
    engine and its reference run the same arithmetic. The mix covers the engine's paths: a
    binary op with two inputs that need gradients (mul, add), a unary op (tanh), a value
    used twice (y, whose gradients add up) and leaves reused by every step (w, b). Values
    stay bounded (|y| grows by at most 1 per step), so no inf or nan slows anything down.
    """
    for _ in range(N_STEPS):
        y = tanh(y * w + b) + y
    return y


class OpChain:
    """Engine cost per primitive on 16-element float32 tensors.

    Each time is for a chain of 100 ops (see `chain`): divide by 100 for one op. The
    backward timings add one `sum` and walk 101 nodes. Compare with `OpChainReference`:
    the difference is the engine's overhead, which dominates for tensors this small.
    """

    params = [BACKENDS]
    param_names = ["backend"]

    def setup(self, backend):
        self.xp = array_module(backend)
        rng = np.random.default_rng(0)
        x, w, b = (as_backend(self.xp, rng.standard_normal(SMALL, dtype=np.float32))
                   for _ in range(3))
        self.x = ag.Tensor(x, requires_grad=True)
        self.w = ag.Tensor(w, requires_grad=True)
        self.b = ag.Tensor(b, requires_grad=True)
        # A graph built once, for the backward-only timing. Repeated backward calls add
        # into .grad, which costs one small addition per leaf.
        self.loss = chain(self.x, self.w, self.b, ag.tanh).sum()

    def time_forward(self, backend):
        """100 ops recording the graph."""
        chain(self.x, self.w, self.b, ag.tanh)
        gpu.synchronize(self.xp)

    def time_forward_no_grad(self, backend):
        """100 ops under no_grad: dispatch and Tensor wrapping without graph nodes."""
        with ag.no_grad():
            chain(self.x, self.w, self.b, ag.tanh)
        gpu.synchronize(self.xp)

    def time_backward(self, backend):
        """Backward through a graph of 101 nodes built in setup (100 ops and a sum)."""
        self.loss.backward()
        gpu.synchronize(self.xp)

    def time_forward_backward(self, backend):
        """Build the 101-node graph and run backward: one training-style pass."""
        chain(self.x, self.w, self.b, ag.tanh).sum().backward()
        self.x.grad = self.w.grad = self.b.grad = None
        gpu.synchronize(self.xp)


class OpChainReference:
    """The same 100 ops as `OpChain` on raw arrays: the floor the engine adds to."""

    params = [BACKENDS]
    param_names = ["backend"]

    def setup(self, backend):
        self.xp = array_module(backend)
        rng = np.random.default_rng(0)
        self.x, self.w, self.b = (as_backend(self.xp, rng.standard_normal(SMALL,
                                                                         dtype=np.float32))
                                  for _ in range(3))

    def time_forward(self, backend):
        """100 ufunc calls on 16-element arrays."""
        chain(self.x, self.w, self.b, self.xp.tanh)
        gpu.synchronize(self.xp)


# --- 2. large matmul ----------------------------------------------------------------------------

class Matmul:
    """C = A @ B and its backward for square float32 matrices of side `n`.

    Backward with upstream gradient G runs dA = G @ B^T and dB = A^T @ G, so one call is
    three GEMMs, 3 * 2n^3 flops: compare with `MatmulReference`, the same three GEMMs.
    """

    params = [BACKENDS, [1024, 2048]]
    param_names = ["backend", "n"]

    def setup(self, backend, n):
        self.xp = array_module(backend)
        rng = np.random.default_rng(0)
        a, b, g = (as_backend(self.xp, rng.standard_normal((n, n), dtype=np.float32))
                   for _ in range(3))
        self.a = ag.Tensor(a, requires_grad=True)
        self.b = ag.Tensor(b, requires_grad=True)
        self.g = g

    def time_forward(self, backend, n):
        """One GEMM, recorded in the graph."""
        self.a @ self.b
        gpu.synchronize(self.xp)

    def time_forward_backward(self, backend, n):
        """Three GEMMs: the forward and the two of the VJP."""
        (self.a @ self.b).backward(self.g)
        self.a.grad = self.b.grad = None
        gpu.synchronize(self.xp)


class MatmulReference:
    """The three GEMMs of `Matmul.time_forward_backward` on raw arrays: a@b, g@b.T, a.T@g."""

    params = [BACKENDS, [1024, 2048]]
    param_names = ["backend", "n"]

    def setup(self, backend, n):
        self.xp = array_module(backend)
        rng = np.random.default_rng(0)
        self.a, self.b, self.g = (as_backend(self.xp, rng.standard_normal((n, n),
                                                                         dtype=np.float32))
                                  for _ in range(3))

    def time_three_matmuls(self, backend, n):
        a, b, g = self.a, self.b, self.g
        c = a @ b  # all three kept alive together, as the engine keeps C, dA and dB
        da = g @ b.T
        db = a.T @ g
        gpu.synchronize(self.xp)
        return c, da, db


class LinearRows:
    """`npplm.layers.linear` forward on few and many rows, against the plain x @ W^T.

    Decoding feeds a linear layer one row per sequence or beam. Up to `FEW_ROWS` rows,
    `linear` computes (W x^T)^T, which OpenBLAS runs much faster than x @ W^T for a skinny
    x; `time_x_at_w_transposed` is the plain form on the same arrays, so the two columns
    show where the switch pays. Shape: t5-small's feed-forward, 512 -> 2048, float32.
    """

    params = [[1, 8, 64, 128, 2048]]
    param_names = ["rows"]

    def setup(self, rows):
        from npplm.layers.linear import linear

        rng = np.random.default_rng(0)
        self.x = rng.standard_normal((rows, 512), dtype=np.float32)
        self.w = rng.standard_normal((2048, 512), dtype=np.float32)
        self.linear = linear

    def time_linear(self, rows):
        self.linear(self.x, self.w)

    def time_x_at_w_transposed(self, rows):
        self.x @ self.w.T


class MatmulMemory:
    """Peak host memory (whole process) of the matmul forward+backward, NumPy backend.

    The inputs take 3 n^2 * 4 bytes (12 MiB at n=1024); the step adds C, dA and dB, plus
    whatever copies the engine makes on the way.
    """

    params = [[1024, 2048]]
    param_names = ["n"]

    def setup(self, n):
        rng = np.random.default_rng(0)
        self.a = ag.Tensor(rng.standard_normal((n, n), dtype=np.float32), requires_grad=True)
        self.b = ag.Tensor(rng.standard_normal((n, n), dtype=np.float32), requires_grad=True)
        self.g = rng.standard_normal((n, n), dtype=np.float32)

    def peakmem_forward_backward(self, n):
        (self.a @ self.b).backward(self.g)
        self.a.grad = self.b.grad = None


# --- 3. a small MLP training step ------------------------------------------------------------

BATCH, IN, HIDDEN, CLASSES = 64, 784, 256, 10  # MNIST-shaped: 784-256-10, batch 64
LR = 0.1


def make_mlp(xp, seed=0):
    """Parameters, a batch and its labels for the 784-256-10 MLP (float32, int64 labels)."""
    rng = np.random.default_rng(seed)
    w1 = rng.standard_normal((IN, HIDDEN), dtype=np.float32) * np.float32(IN ** -0.5)
    w2 = rng.standard_normal((HIDDEN, CLASSES), dtype=np.float32) * np.float32(HIDDEN ** -0.5)
    b1 = np.zeros(HIDDEN, dtype=np.float32)
    b2 = np.zeros(CLASSES, dtype=np.float32)
    x = rng.standard_normal((BATCH, IN), dtype=np.float32)
    y = rng.integers(0, CLASSES, size=BATCH)
    params = [ag.Tensor(as_backend(xp, p), requires_grad=True) for p in (w1, b1, w2, b2)]
    return params, ag.Tensor(as_backend(xp, x)), as_backend(xp, y)


def mlp_step(params, x, y, activation):
    """One SGD step: logits = act(x @ W1 + b1) @ W2 + b2, cross-entropy, backward, update.

    Shapes: x (64, 784) @ W1 (784, 256) -> (64, 256); @ W2 (256, 10) -> logits (64, 10).
    Returns the loss Tensor (before the update).
    """
    w1, b1, w2, b2 = params
    h = activation(x @ w1 + b1)  # (64, 256)
    loss = cross_entropy(h @ w2 + b2, y)  # (64, 10) logits -> scalar mean loss
    loss.backward()
    with ag.no_grad():
        for p in params:
            p.data -= LR * p.grad  # in place on the raw array; no graph either way
            p.grad = None
    return loss


class MLPStep:
    """A full training step of the 784-256-10 MLP, batch 64: 2 matmuls, 2 bias adds, an
    activation and a fused cross-entropy (6 graph nodes), their VJPs and the SGD update.

    At this size the GEMMs are small (64x784x256 is 26 Mflop), so this sits between the
    overhead-bound `OpChain` and the compute-bound `Matmul`.
    """

    params = [BACKENDS, ["tanh", "relu"]]
    param_names = ["backend", "activation"]

    def setup(self, backend, activation):
        self.xp = array_module(backend)
        self.params, self.x, self.y = make_mlp(self.xp)
        self.activation = getattr(ag, activation)

    def time_step(self, backend, activation):
        mlp_step(self.params, self.x, self.y, self.activation)
        gpu.synchronize(self.xp)


class MLPStepMemory:
    """Peak host memory (whole process) of the MLP step, NumPy backend."""

    def setup(self):
        self.params, self.x, self.y = make_mlp(np)

    def peakmem_step(self):
        mlp_step(self.params, self.x, self.y, ag.tanh)
