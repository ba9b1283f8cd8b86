"""Fused neural-network primitives: softmax, log_softmax, cross-entropy, dropout.

Each could be composed from smaller primitives (and the tests do exactly that, as oracles),
but fusing them saves memory and time and lets us write the gradient in its simplest form.
All act on the last axis by default, the class/vocabulary axis in npplm.

softmax, log_softmax and cross_entropy can run Numba kernels along the last axis: on the
CPU for large float32 NumPy arrays (gpu/kernels/softmax.py), on the GPU for float32 CuPy
arrays (gpu/cuda_kernels/softmax.py). One visible dispatch line in each function below;
the array code after it is the reference, and what every other array (float64, small)
computes. The engine imports nothing from gpu/ or npplm/, so the kernels are plugged in
from outside: `import npplm` calls use_kernels(gpu.kernels.softmax, gpu.cuda_kernels.ROWS).
autograd on its own runs the array code everywhere.
"""

from autograd.backend import array_module
from autograd.primitive import primitive
from autograd.tensor import Tensor

plugged_in = ()  # the kernel modules, asked in order


def use_kernels(*modules):
    """Run softmax, log_softmax and cross_entropy on the first of `modules` whose
    applies(axis, *arrays) says so (gpu/kernels/softmax.py); none: the array code only."""
    global plugged_in
    plugged_in = modules


def _kernel(axis, *arrays):
    """The plugged-in module that takes these arrays, or None (the reference)."""
    return next((m for m in plugged_in if m.applies(axis, *arrays)), None)


@primitive
def softmax(x, *, axis=-1):
    """softmax(x)_i = exp(x_i - m) / sum_j exp(x_j - m), with m = max(x) for stability."""
    if kernels := _kernel(axis, x):
        return kernels.softmax_forward(x)
    xp = array_module(x)
    e = xp.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


@softmax.defvjp
def softmax_vjp(g, out, x, *, axis=-1):
    # With s = softmax(x): ds_i/dx_j = s_i (delta_ij - s_j), so
    # dL/dx_j = sum_i g_i s_i (delta_ij - s_j) = s_j (g_j - sum_i g_i s_i).
    if kernels := _kernel(axis, g, out):
        return (kernels.softmax_backward(g, out),)
    return (out * (g - (g * out).sum(axis=axis, keepdims=True)),)


@primitive
def log_softmax(x, *, axis=-1):
    """log_softmax(x)_i = x_i - logsumexp(x)."""
    if kernels := _kernel(axis, x):
        return kernels.log_softmax_forward(x)
    xp = array_module(x)
    shifted = x - x.max(axis=axis, keepdims=True)
    return shifted - xp.log(xp.exp(shifted).sum(axis=axis, keepdims=True))


@log_softmax.defvjp
def log_softmax_vjp(g, out, x, *, axis=-1):
    # d(x_i - lse)/dx_j = delta_ij - softmax_j, so dL/dx_j = g_j - softmax_j * sum_i g_i.
    if kernels := _kernel(axis, g, out):
        return (kernels.log_softmax_backward(g, out),)
    xp = array_module(g)
    return (g - xp.exp(out) * g.sum(axis=axis, keepdims=True),)


def _check_targets(logits, targets, ignore_index):
    """Targets must be integers of shape logits.shape[:-1], each a class or ignore_index."""
    xp = array_module(logits)
    if getattr(targets, "dtype", None) is None or targets.dtype.kind not in "iu":
        raise TypeError(f"cross_entropy: targets must be an integer array, got "
                        f"{getattr(targets, 'dtype', type(targets).__name__)}")
    if targets.shape != logits.shape[:-1]:
        raise ValueError(f"cross_entropy: targets have shape {targets.shape} but logits "
                         f"{logits.shape} need {logits.shape[:-1]} (classes on the last axis)")
    n_classes = logits.shape[-1]
    valid = targets != ignore_index
    bad = valid & ((targets < 0) | (targets >= n_classes))
    if bad.any():
        value = int(targets[bad].ravel()[0])
        raise IndexError(f"cross_entropy: target {value} is out of range for {n_classes} "
                         f"classes (valid: 0..{n_classes - 1}, or ignore_index={ignore_index})")
    return valid, xp.where(valid, targets, 0)


def cross_entropy_reference(logits, safe, label_smoothing):
    """(...) losses -log p[t], smoothed: (1 - eps) (-log p[t]) + eps mean_c(-log p[c]).

    safe: the targets with ignored positions replaced by class 0 (masked by the caller).
    """
    xp = array_module(logits)
    logp = log_softmax.fun(logits)  # (..., C)
    loss = -xp.take_along_axis(logp, safe[..., None], axis=-1)[..., 0]  # (...)
    if label_smoothing:
        loss = (1 - label_smoothing) * loss - label_smoothing * logp.mean(axis=-1)
    return loss


def cross_entropy_grad_reference(logits, safe, weight, label_smoothing):
    """weight[..., None] (softmax(logits) - q): q is (1 - eps) on the target plus eps / C."""
    xp = array_module(logits)
    grad = softmax.fun(logits)  # (..., C)
    if label_smoothing:
        grad -= label_smoothing / logits.shape[-1]
    xp.put_along_axis(grad, safe[..., None], xp.take_along_axis(grad, safe[..., None], -1)
                      - (1 - label_smoothing), axis=-1)
    return grad * weight[..., None]


@primitive
def cross_entropy(logits, targets, *, ignore_index=-100, label_smoothing=0.0, reduction="mean"):
    """Cross-entropy of integer targets under softmax(logits), classes on the last axis.

    loss_i = (1 - eps) * -log p_i[t_i] + eps * mean_c(-log p_i[c])  (eps = label_smoothing)
    Positions whose target is `ignore_index` contribute nothing. reduction="mean" divides by
    the number of positions not ignored (nan if there are none, as in PyTorch), "sum" adds,
    "none" returns one loss per position. Matches torch.nn.functional.cross_entropy.
    """
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"cross_entropy: reduction={reduction!r}; use 'mean', 'sum' or 'none'")
    xp = array_module(logits)
    valid, safe = _check_targets(logits, targets, ignore_index)
    kernels = _kernel(-1, logits)  # Numba, float32
    rows = kernels.cross_entropy_forward if kernels else cross_entropy_reference
    loss = rows(logits, safe, label_smoothing)  # (...), one loss a position
    loss = xp.where(valid, loss, 0)
    if reduction == "none":
        return loss
    if reduction == "sum":
        return loss.sum()
    return loss.sum() / valid.sum().astype(loss.dtype)


@cross_entropy.defvjp
def cross_entropy_vjp(g, out, logits, targets, *, ignore_index=-100, label_smoothing=0.0,
                      reduction="mean"):
    # dloss_i/dlogits_i = softmax(logits_i) - q_i, where q_i is the target distribution:
    # (1 - eps) on the true class plus eps/C spread over all C classes.
    xp = array_module(logits)
    valid, safe = _check_targets(logits, targets, ignore_index)
    if reduction == "mean":
        g = g / valid.sum().astype(g.dtype)
    weight = xp.where(valid, g, 0)  # (...): per-position upstream gradient, 0 if ignored
    kernels = _kernel(-1, logits)  # Numba, float32
    grad = kernels.cross_entropy_backward if kernels else cross_entropy_grad_reference
    return grad(logits, safe, weight, label_smoothing), None


@primitive(name="dropout")
def dropout_with_mask(x, keep, *, p):
    """x * keep / (1 - p): the elements where `keep` is False are zeroed."""
    return array_module(x).where(keep, x * (1.0 / (1.0 - p)), 0)


@dropout_with_mask.defvjp
def dropout_with_mask_vjp(g, out, x, keep, *, p):
    return array_module(g).where(keep, g * (1.0 / (1.0 - p)), 0), None


def dropout(x, p, rng, training=True):
    """Inverted dropout: zero each element with probability p, scale the rest by 1/(1-p).

    `rng` is an explicit generator (`numpy.random.default_rng(seed)`, or CuPy's on the GPU),
    so runs are reproducible. Out of training, or with p == 0, x is returned unchanged.
    """
    if not 0.0 <= p < 1.0:
        raise ValueError(f"dropout: p={p} must be in [0, 1)")
    if not training or p == 0.0:
        return x
    if rng is None:
        raise ValueError("dropout needs an explicit random generator, e.g. "
                         "numpy.random.default_rng(0)")
    data = x.data if isinstance(x, Tensor) else x  # (an ndarray's .data is its buffer)
    keep = array_module(data).asarray(rng.random(data.shape, dtype=data.dtype) >= p)
    return dropout_with_mask(x, keep, p=p)
