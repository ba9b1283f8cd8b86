"""The losses every family trains with, each written once.

    cross_entropy                      a fused primitive: integer targets, ignore_index,
                                       label smoothing (torch.nn.functional.cross_entropy)
    causal_lm_loss                     next-token cross-entropy: position t scored against
                                       token t + 1 (GPT, LLaMA)
    binary_cross_entropy_with_logits   multi-label classification
    mean_squared_error                 regression
    sequence_classification_loss       Hugging Face's choice among the three by problem_type
    span_extraction_loss               extractive QA: start and end positions

Labels are integer bookkeeping: they may arrive as NumPy arrays, lists or Tensors, on the
host, and move to the logits' device here, at the one place they meet them.
"""

import numpy as np

from autograd import Tensor, abs, array_module, as_array, exp, log, maximum, primitive, to_numpy
from autograd.precision import in_float32, in_float32_vjp
from gpu.numba_cpu import softmax as kernels
from gpu.numba_cuda import softmax as cuda_kernels
from npplm.layers.embedding import int_array
from npplm.layers.softmax import log_softmax, softmax

IGNORE_INDEX = -100  # the label of a position that is not scored (Hugging Face's)


def _check_targets(logits, targets, ignore_index):
    """Targets must be integers of shape logits.shape[:-1], each a class or ignore_index.
    Returns (valid, safe) on the logits' device: which positions count, and the targets
    with the ignored ones replaced by class 0 (masked out by the caller)."""
    xp = array_module(logits)
    if getattr(targets, "dtype", None) is None or targets.dtype.kind not in "iu":
        raise TypeError(f"cross_entropy: targets must be an integer array, got "
                        f"{getattr(targets, 'dtype', type(targets).__name__)}")
    if targets.shape != logits.shape[:-1]:
        raise ValueError(f"cross_entropy: targets have shape {targets.shape} but logits "
                         f"{logits.shape} need {logits.shape[:-1]} (classes on the last axis)")
    targets = xp.asarray(targets)  # host labels meet device logits here, once
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
@in_float32(keep_float32=(0,))
def cross_entropy(logits, targets, *, ignore_index=IGNORE_INDEX, label_smoothing=0.0,
                  reduction="mean"):
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
    if kernels.applies(-1, logits):
        loss = kernels.cross_entropy_forward(logits, safe, label_smoothing)  # Numba
    elif cuda_kernels.applies(-1, logits):
        loss = cuda_kernels.cross_entropy_forward(logits, safe, label_smoothing)  # CUDA
    else:
        loss = cross_entropy_reference(logits, safe, label_smoothing)  # (...), per position
    loss = xp.where(valid, loss, 0)
    if reduction == "none":
        return loss
    if reduction == "sum":
        return loss.sum()
    return loss.sum() / valid.sum().astype(loss.dtype)


@cross_entropy.defvjp
@in_float32_vjp
def cross_entropy_vjp(g, out, logits, targets, *, ignore_index=IGNORE_INDEX,
                      label_smoothing=0.0, reduction="mean"):
    # dloss_i/dlogits_i = softmax(logits_i) - q_i, where q_i is the target distribution:
    # (1 - eps) on the true class plus eps/C spread over all C classes.
    xp = array_module(logits)
    valid, safe = _check_targets(logits, targets, ignore_index)
    if reduction == "mean":
        g = g / valid.sum().astype(g.dtype)
    weight = xp.where(valid, g, 0)  # (...): per-position upstream gradient, 0 if ignored
    if kernels.applies(-1, logits):
        grad = kernels.cross_entropy_backward(logits, safe, weight, label_smoothing)
    elif cuda_kernels.applies(-1, logits):
        grad = cuda_kernels.cross_entropy_backward(logits, safe, weight, label_smoothing)
    else:
        grad = cross_entropy_grad_reference(logits, safe, weight, label_smoothing)
    return grad, None


def causal_lm_loss(logits, labels):
    """Mean cross-entropy of token t+1 given tokens 0..t, as Hugging Face computes it.

    logits (B, T, V); labels (B, T) are the input ids themselves (or -100 where no loss is
    wanted): position t is scored against labels[:, t + 1], the last position against
    nothing. Shifting the labels (padding them with -100) rather than slicing the logits
    keeps the (B, T, V) logits whole, so their gradient needs no scatter.
    """
    labels = to_numpy(int_array(labels, "labels"))
    if labels.shape != tuple(logits.shape[:2]):
        raise ValueError(f"labels has shape {labels.shape} but the logits are for "
                         f"{tuple(logits.shape[:2])} positions: they must be equal")
    shifted = np.full_like(labels, IGNORE_INDEX)
    shifted[:, :-1] = labels[:, 1:]  # (B, T): position t predicts token t + 1
    return cross_entropy(logits, shifted)


def binary_cross_entropy_with_logits(x, y):
    """mean(-y log sigmoid(x) - (1 - y) log(1 - sigmoid(x))), written overflow-free as
    max(x, 0) - x y + log(1 + exp(-|x|)) (the form of torch's BCEWithLogitsLoss)."""
    return (maximum(x, 0.0) - x * y + log(1.0 + exp(-abs(x)))).mean()


def mean_squared_error(pred, target):
    diff = pred - target
    return (diff * diff).mean()


def sequence_classification_loss(logits, labels, num_labels, problem_type=None):
    """Hugging Face's loss for a sequence classifier, logits (B, num_labels).

    problem_type (when None: regression if num_labels == 1, else single-label if the
    labels are integers, else multi-label):
        regression                  mean squared error, labels (B,) or (B, num_labels)
        single_label_classification cross-entropy, integer labels (B,)
        multi_label_classification  binary cross-entropy per class, 0/1 labels (B, n)
    """
    labels = as_array(labels)
    labels = labels if hasattr(labels, "dtype") else np.asarray(labels)
    if problem_type is None:
        problem_type = ("regression" if num_labels == 1 else
                        "single_label_classification" if labels.dtype.kind in "iu" else
                        "multi_label_classification")
    if problem_type == "single_label_classification":
        return cross_entropy(logits.reshape(-1, num_labels),
                             int_array(labels, "labels").reshape(-1))
    # Float targets: on the logits' device and in their dtype (never a silent promotion).
    target = Tensor(array_module(logits.data).asarray(labels).astype(logits.dtype))
    if problem_type == "regression":
        if num_labels == 1:  # (B, 1) against (B,): compare as flat vectors
            return mean_squared_error(logits.reshape(-1), target.reshape(-1))
        return mean_squared_error(logits, target)
    return binary_cross_entropy_with_logits(logits, target)


def span_extraction_loss(start_logits, end_logits, start_positions, end_positions):
    """Extractive QA's loss, as Hugging Face's: (CE(start) + CE(end)) / 2.

    start_logits, end_logits (B, T); positions (B,) or (B, 1). Positions are clamped to
    [0, T] and T is ignored: an answer cut off by truncation teaches nothing.
    """
    T = start_logits.shape[1]
    losses = []
    for logits, positions, name in ((start_logits, start_positions, "start_positions"),
                                    (end_logits, end_positions, "end_positions")):
        positions = to_numpy(int_array(positions, name))
        positions = np.clip(positions.reshape(-1), 0, T)  # (B, 1) -> (B,); outside: T
        losses.append(cross_entropy(logits, positions, ignore_index=T))
    return (losses[0] + losses[1]) / 2
