"""Optimizers: AdamW and SGD, plus global gradient-norm clipping.

Every update here is plain array arithmetic on `p.data` and `p.grad`, through the array
module of the parameter (NumPy or CuPy), in the parameter's own dtype: a float32 model
keeps float32 moments.

AdamW (Loshchilov and Hutter, "Decoupled Weight Decay Regularization", ICLR 2019,
arXiv:1711.05101), with Adam's moments and bias correction (Kingma and Ba, "Adam: A Method
for Stochastic Optimization", ICLR 2015, arXiv:1412.6980). For step t = 1, 2, ... and a
parameter p with gradient g:

    p   <- p - lr * wd * p                        decoupled decay: not part of the gradient
    m   <- b1 m + (1 - b1) g                      first moment (momentum)
    v   <- b2 v + (1 - b2) g^2                    second moment
    p   <- p - (lr / (1 - b1^t)) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)

The last line is Adam's m_hat / (sqrt(v_hat) + eps) with the two bias corrections moved
out of the arrays, in the order PyTorch's torch.optim.AdamW computes it, so that ten steps
of both agree to float32 rounding (tests/training/test_torch_parity.py). "Decoupled" is the
point of the paper: L2 regularisation added to the loss would be divided by sqrt(v) like
every gradient, so weights with large gradients would barely be decayed; AdamW shrinks
every weight by the same factor lr * wd.

Which parameters decay: `decay_groups(model, wd)` follows nanoGPT and GPT-3's practice:
matrices (embeddings and linear weights, ndim >= 2) decay, vectors (biases, LayerNorm and
RMSNorm gains) do not, since shrinking a gain or an offset towards zero is no
regularisation of the function's complexity.

Large float32 NumPy parameters take one fused pass per parameter for the AdamW update and
a parallel float64 sum of squares for the clipping norm (gpu/numba_cpu/optim.py), each
dispatched on one line below; `adamw_update_reference` and `sum_of_squares_reference`
here are what they must equal (the update bit for bit, the norm to float64 rounding) and
what float64, CuPy and small parameters run.

An optimizer's state (moments, step count) goes into a checkpoint with `state_arrays()` /
`state_meta()` and comes back with `load_state(arrays, meta)`; arrays are keyed by the
parameter's index in the optimizer's order, as PyTorch's state_dict does, and the
checkpoint code checks that the model's parameter names and shapes match.
"""

import math

from autograd import array_module
from gpu.numba_cpu import optim as kernels


def _groups(params, defaults):
    """Parameter groups: a list of Tensors is one group; dicts {"params": [...], ...} keep
    their own settings over `defaults`."""
    params = list(params)
    if not params:
        raise ValueError("the optimizer got an empty parameter list")
    if not isinstance(params[0], dict):
        params = [{"params": params}]
    groups = []
    for group in params:
        group = {**defaults, **group, "params": list(group["params"])}
        for p in group["params"]:
            if not getattr(p, "requires_grad", False):
                raise ValueError(f"the optimizer got a tensor of shape {p.shape} that does "
                                 "not require gradients")
        groups.append(group)
    return groups


class Optimizer:
    """What AdamW and SGD share: parameter groups, the learning rate, zero_grad, state."""

    def __init__(self, params, defaults):
        self.param_groups = _groups(params, defaults)
        self.params = [p for g in self.param_groups for p in g["params"]]
        self.state = [{} for _ in self.params]  # per-parameter arrays, by index
        self.t = 0  # updates taken

    def set_lr(self, lr):
        """Set every group's learning rate (a schedule calls this before each step)."""
        for group in self.param_groups:
            group["lr"] = float(lr)

    def zero_grad(self):
        for p in self.params:
            p.grad = None

    def _each(self):
        """(group, parameter, its state dict) for every parameter that has a gradient."""
        i = 0
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    yield group, p, self.state[i]
                i += 1

    # --- checkpoints -------------------------------------------------------------------------
    def state_arrays(self):
        """{"<index>.<name>": array}: every per-parameter array (moments), for safetensors."""
        from autograd import to_numpy

        return {f"{i}.{k}": to_numpy(v) for i, s in enumerate(self.state) for k, v in s.items()}

    def state_meta(self):
        """The JSON part of the state: kind, step count, each group's settings."""
        groups = [{k: v for k, v in g.items() if k != "params"} for g in self.param_groups]
        return {"kind": type(self).__name__, "t": self.t, "groups": groups,
                "shapes": [list(p.shape) for p in self.params]}

    def load_state(self, arrays, meta):
        """Restore state_arrays() / state_meta(); errors name what does not match."""
        if meta.get("kind") != type(self).__name__:
            raise ValueError(f"the checkpoint's optimizer is {meta.get('kind')!r}, not "
                             f"{type(self).__name__}")
        shapes = [list(p.shape) for p in self.params]
        if meta.get("shapes") != shapes:
            raise ValueError(f"the checkpoint's optimizer holds {len(meta.get('shapes', []))} "
                             f"parameters of other shapes than this model's {len(shapes)}")
        state = [{} for _ in self.params]
        for key, value in arrays.items():
            index, name = key.split(".", 1)
            p = self.params[int(index)]
            state[int(index)][name] = array_module(p.data).array(value, dtype=p.dtype)  # a copy
        self.state, self.t = state, int(meta["t"])
        for group, saved in zip(self.param_groups, meta["groups"]):
            group.update({k: (tuple(v) if isinstance(v, list) else v) for k, v in saved.items()})


class AdamW(Optimizer):
    """Adam with decoupled weight decay (see the module docstring for the update)."""

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01):
        if lr < 0 or eps < 0 or weight_decay < 0:
            raise ValueError(f"AdamW: lr={lr}, eps={eps}, weight_decay={weight_decay} must "
                             "be >= 0")
        if not all(0.0 <= b < 1.0 for b in betas):
            raise ValueError(f"AdamW: betas={betas} must each lie in [0, 1)")
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps,
                                      weight_decay=weight_decay))

    def step(self):
        self.t += 1
        for group, p, state in self._each():
            if not state:
                xp = array_module(p.data)
                state["exp_avg"] = xp.zeros_like(p.data)
                state["exp_avg_sq"] = xp.zeros_like(p.data)
            self.update(group, p.data, p.grad, state["exp_avg"], state["exp_avg_sq"])

    def update(self, group, p, g, m, v):
        """Step self.t of AdamW on the arrays p, g, m, v (a whole parameter, or the slice of
        it that one rank owns under ZeRO-1: the update is elementwise), in place."""
        update = (kernels.adamw_update if kernels.applies(p, g, m, v)
                  else adamw_update_reference)
        update(p, g, m, v, group["lr"], group["betas"], group["eps"], group["weight_decay"],
               self.t)


def adamw_update_reference(p, g, m, v, lr, betas, eps, weight_decay, t):
    """AdamW's update of one parameter at step t, in place on the arrays p (the parameter),
    m and v (its moments), g its gradient: the module docstring's four lines, in
    torch.optim.AdamW's order of operations. Large float32 NumPy parameters run the same
    arithmetic in one fused pass instead (gpu/numba_cpu/optim.py), bit for bit equal."""
    b1, b2 = betas
    if weight_decay:
        p *= 1.0 - lr * weight_decay
    m *= b1
    m += (1.0 - b1) * g
    v *= b2
    v += (1.0 - b2) * (g * g)
    step_size = lr / (1.0 - b1**t)
    denom = array_module(p).sqrt(v)
    denom /= math.sqrt(1.0 - b2**t)
    denom += eps
    p -= step_size * (m / denom)


class SGD(Optimizer):
    """Stochastic gradient descent with optional momentum and (coupled) weight decay:

        g <- g + wd p;   b <- mu b + g (b = g at the first step);   p <- p - lr b

    as torch.optim.SGD (dampening 0, no Nesterov).
    """

    def __init__(self, params, lr=1e-2, momentum=0.0, weight_decay=0.0):
        if lr < 0 or not 0.0 <= momentum < 1.0 or weight_decay < 0:
            raise ValueError(f"SGD: lr={lr} and weight_decay={weight_decay} must be >= 0 and "
                             f"momentum={momentum} in [0, 1)")
        super().__init__(params, dict(lr=lr, momentum=momentum, weight_decay=weight_decay))

    def step(self):
        self.t += 1
        for group, p, state in self._each():
            g = p.grad
            if group["weight_decay"]:
                g = g + group["weight_decay"] * p.data
            if group["momentum"]:
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = g.copy()
                else:
                    buf = state["momentum_buffer"]
                    buf *= group["momentum"]
                    buf += g
                g = state["momentum_buffer"]
            p.data -= group["lr"] * g


def decay_groups(model, weight_decay):
    """Two groups: matrices (ndim >= 2) with `weight_decay`, vectors without (see above)."""
    params = model.parameters()
    return [{"params": [p for p in params if p.ndim >= 2], "weight_decay": weight_decay},
            {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0}]


def clip_grad_norm(params, max_norm):
    """Scale every gradient by min(1, max_norm / (||g|| + 1e-6)); return ||g|| before.

    ||g|| is the global norm: the 2-norm of all gradients concatenated into one vector.
    Clipping the global norm (Pascanu et al., arXiv:1211.5063) keeps the update's
    direction and only shortens it, which is why one rare huge gradient (a loss spike)
    cannot throw the weights far. Computed in float64, whatever the gradients' dtype, so
    that the sum of squares of millions of entries loses nothing. A non-finite norm is
    returned as is, as torch's clip_grad_norm_ (error_if_nonfinite=False) returns it; the
    gradients are then left as they are (NaN) or scaled by 0 (inf), where torch scales them
    by NaN. Either way they are unusable, and the trainer checks the norm before stepping.
    """
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return 0.0
    total = math.sqrt(sum(kernels.sum_of_squares(g) if kernels.applies(g)
                          else sum_of_squares_reference(g) for g in grads))
    if max_norm is not None:
        scale = max_norm / (total + 1e-6)
        if scale < 1.0:
            for g in grads:
                g *= scale  # already one vectorised pass in NumPy (a kernel was no faster)
    return total


def sum_of_squares_reference(g):
    """sum(g ** 2) in float64, as a Python float. Large float32 NumPy gradients take a
    parallel kernel instead (gpu/numba_cpu/optim.py), whose sum does not depend on the number
    of threads either."""
    return float((g.astype("float64") ** 2).sum())
