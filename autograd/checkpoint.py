"""Activation checkpointing: keep a block's inputs, not its activations; redo its forward in
backward (Chen et al., "Training Deep Nets with Sublinear Memory Cost", arXiv:1604.06174;
`torch.utils.checkpoint`).

Backward needs every intermediate array a forward made (the graph's Node.inputs). For a
transformer these activations, B x T x (a dozen widths) per block, dwarf the weights at long
T. `checkpoint(fn, *args, params=...)` runs fn without recording a graph, so its
intermediates are freed as soon as it returns, and records one node in their place:

    forward:   y = fn(x)                      under no_grad: nothing of fn's inside is kept
               node(parents = x and params, inputs = the arrays of x)
    backward:  replay y' = fn(x') on a local tape (x' fresh leaves, random state restored),
               run backward from y' with the upstream gradient g,
               return (dL/dx', dL/dparams) to the outer backward as this node's VJP

Checkpoint every one of L blocks and the peak holds L block inputs plus one block's
activations (the one being replayed) instead of L blocks' activations: for one extra
forward (about a third more compute), memory drops from O(L) activations to O(1) of them
plus the inputs (Chen et al.'s sqrt(n) is the optimum when the segment length is chosen;
per block is what PyTorch and Hugging Face do).

Two traps this avoids:
- **Parameters are inputs.** The parameters fn uses are passed as `params` and are this
  node's parents like x, so a block whose input needs no gradient (frozen embeddings, or
  the first block of a model given embeddings) still gets its parameters' gradients, which
  PyTorch's reentrant checkpoint loses (its output then requires no gradient). Their
  gradients come out of the replay as VJP outputs (each parameter's `.grad` is set aside
  during the replay and put back), so the outer backward adds them as it adds any
  gradient, and `on_leaf_done` sees them complete at the right moment.
- **Randomness is replayed.** Dropout inside fn must draw the same masks the second time.
  The engine knows no random generators; the caller passes `random_state=(get, set)`:
  get() is called before the forward, set(that) before the replay, and the generators are
  put back where they were after it (npplm.layers.checkpointing passes its Dropouts').

The replayed forward runs the same primitives on the same arrays in the same order, so
the gradients equal those without checkpointing bit for bit (tests/autograd).
"""

from autograd.backend import array_module
from autograd.graph import Node, enable_grad, is_grad_enabled, no_grad
from autograd.precision import is_float
from autograd.tensor import Tensor


class Replay:
    """What a checkpoint node calls in backward (the Primitive interface: a name and a VJP).
    One per checkpoint() call, never registered: it holds that call's fn."""

    name = "checkpoint"

    def __init__(self, fn, args, params, random_state, multiple):
        self.fn, self.args, self.params = fn, args, params
        self.random_state, self.multiple = random_state, multiple
        self.saved = random_state[0]() if random_state is not None else None

    def vjp(self, g, out, *inputs):
        """Replay fn on fresh leaves, backward from its output with g; the gradients of the
        tensor arguments, then of the parameters."""
        n = len(inputs) - len(self.params)
        leaves = [Tensor(a, requires_grad=arg.requires_grad)
                  for a, arg in zip(inputs[:n], self._tensor_args())]
        leaves_iter = iter(leaves)
        args = [next(leaves_iter) if isinstance(a, Tensor) else a for a in self.args]
        set_aside = [p.grad for p in self.params]
        for p in self.params:
            p.grad = None
        now = None
        if self.random_state is not None:
            now = self.random_state[0]()
            self.random_state[1](self.saved)
        try:
            with enable_grad():
                y = self.fn(*args)
            if not self.multiple:
                if y.requires_grad:
                    y.backward(g)
            else:  # one backward for all outputs: d/dy_i sum_i (y_i * g_i) = g_i exactly
                terms = [(o * Tensor._wrap(gi, None, None)).sum()
                         for o, gi in zip(y, g) if o.requires_grad]
                if terms:
                    sum(terms[1:], terms[0]).backward()
            param_grads = [p.grad if p.grad is not None
                           else array_module(p.data).zeros_like(p.data) for p in self.params]
        finally:
            if now is not None:
                self.random_state[1](now)
            for p, kept in zip(self.params, set_aside):
                p.grad = kept
        return (*[leaf.grad if leaf.requires_grad else None for leaf in leaves],
                *param_grads)

    def _tensor_args(self):
        return [a for a in self.args if isinstance(a, Tensor)]


def checkpoint(fn, *args, params=(), random_state=None):
    """fn(*args), its intermediate activations not kept but recomputed in backward.

    fn          Tensors (and any other values) in, a float Tensor or a tuple of them out;
                it must compute the same thing when called again (see random_state)
    params      every parameter fn uses that needs a gradient (a module's .parameters())
    random_state  (get, set): fn's random generators' state, read before the forward and
                set again before the replay (npplm passes its dropout layers')

    Without a graph to record (no_grad, or nothing requires a gradient) it is just fn(*args).
    """
    tensors = [a for a in args if isinstance(a, Tensor)]
    params = [p for p in params if p.requires_grad]
    if not is_grad_enabled() or not (params or any(t.requires_grad for t in tensors)):
        return fn(*args)
    replay = Replay(fn, args, params, random_state, multiple=None)
    with no_grad():
        y = fn(*args)
    multiple = isinstance(y, tuple)
    replay.multiple = multiple
    outputs = y if multiple else (y,)
    for o in outputs:
        if not (isinstance(o, Tensor) and is_float(o.dtype)):
            raise TypeError(f"checkpoint: fn must return float Tensors, got {type(o).__name__}")
    parents = tuple(t if t.requires_grad else None for t in tensors) + tuple(params)
    raw = tuple(t.data for t in tensors) + tuple(p.data for p in params)
    node = Node(replay, parents, raw, {}, tuple(o.data for o in outputs) if multiple
                else outputs[0].data)
    if multiple:
        return tuple(Tensor._wrap(o.data, node, i) for i, o in enumerate(outputs))
    return Tensor._wrap(outputs[0].data, node, None)
