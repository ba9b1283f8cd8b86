"""The graph: nodes recorded by primitives, reverse-mode backward, and `no_grad`.

Each primitive call that involves a Tensor requiring gradients records one `Node`: which
primitive ran, its parents (the input Tensors that need gradients), the raw input arrays
and static parameters, and the raw output. Backward visits nodes in reverse topological
order (newest first, iteratively, so a chain of 100,000 ops does not touch Python's
recursion limit), calls each node's VJP once with the summed gradient of its output, frees that
gradient, and passes the results on. Gradients reaching a leaf Tensor (one made by the user
with `requires_grad=True`) are added to its `.grad`.
"""

import heapq
import itertools

from autograd.backend import array_module

_grad_enabled = True
_creation_order = itertools.count()


def is_grad_enabled():
    return _grad_enabled


class no_grad:
    """Context manager: ops inside record no graph (inference, optimizer updates)."""

    def __enter__(self):
        global _grad_enabled
        self._previous = _grad_enabled
        _grad_enabled = False

    def __exit__(self, *exc):
        global _grad_enabled
        _grad_enabled = self._previous


class enable_grad:
    """Context manager: record graphs again, e.g. inside no_grad (a checkpointed block's
    replay in backward, autograd/checkpoint.py)."""

    def __enter__(self):
        global _grad_enabled
        self._previous = _grad_enabled
        _grad_enabled = True

    def __exit__(self, *exc):
        global _grad_enabled
        _grad_enabled = self._previous


class Node:
    """One primitive application in the graph."""

    __slots__ = ("primitive", "parents", "inputs", "params", "out", "seq")

    def __init__(self, primitive, parents, inputs, params, out):
        self.seq = next(_creation_order)  # larger = newer; see backward()
        self.primitive = primitive  # the Primitive that ran
        self.parents = parents  # per input: the Tensor if it needs a gradient, else None
        self.inputs = inputs  # raw input arrays (and scalars), as the VJP wants them
        self.params = params  # static keyword parameters
        self.out = out  # raw output (a tuple for multiple-output primitives)


def toposort(root):
    """Every node reachable from the node `root`, newest first: each before its inputs' nodes.

    Backward does not need it (its heap yields the same order lazily); it is for looking at
    a graph, e.g. listing the primitives a loss was built from.
    """
    seen, stack = {root}, [root]
    while stack:
        for p in stack.pop().parents:
            if p is not None and p._node is not None and p._node not in seen:
                seen.add(p._node)
                stack.append(p._node)
    return sorted(seen, key=lambda node: -node.seq)


def _accumulate(grads, node, index, g):
    """Add `g` to the pending gradient of output `index` of `node` (index None: single)."""
    if index is None:
        old = grads.get(node)
        grads[node] = g if old is None else old + g
    else:
        slots = grads.get(node)
        if slots is None:
            slots = grads[node] = [None] * len(node.out)
        slots[index] = g if slots[index] is None else slots[index] + g


def leaf_uses(root):
    """{id(leaf): (leaf, how many graph edges lead into it)} for the graph below `root`."""
    uses = {}
    for node in toposort(root):
        for p in node.parents:
            if p is not None and p._node is None:
                leaf, n = uses.get(id(p), (p, 0))
                uses[id(p)] = (leaf, n + 1)
    return uses


def backward(tensor, grad, on_leaf_done=None):
    """Propagate `grad` (= dLoss/d tensor, a raw array) back to every leaf's `.grad`.

    The order: a node is always created after the nodes of its inputs, so creation order
    is a topological order of the graph. Visiting nodes newest first (a heap keyed on
    -seq) therefore reaches each node only after every node that consumed its output, when
    its gradient is complete. No recursion, and no separate sorting pass.

    on_leaf_done(leaf), when given, is called as soon as a leaf's `.grad` is complete: when
    the last node that uses it has been visited (one counting pass over the graph first).
    Data-parallel training starts reducing a layer's gradients there, while backward goes
    on through the layers below (npplm/distributed/data_parallel.py), as PyTorch's
    post-accumulate-grad hooks let DDP do.
    """
    root = tensor._node
    pending = leaf_uses(root) if on_leaf_done is not None else None
    grads = {}
    handed_out = {id(grad)}  # arrays a leaf may not keep as its own .grad (see below)
    _accumulate(grads, root, tensor._index, grad)
    heap = [(-root.seq, root)]
    while heap:
        node = heapq.heappop(heap)[1]
        g = grads.pop(node)  # freed as soon as it is used
        out = node.out
        if isinstance(g, list):  # multiple outputs: zeros where an output got no gradient
            g = tuple(gi if gi is not None else array_module(o).zeros_like(o)
                      for gi, o in zip(g, out))
        prim = node.primitive
        in_grads = prim.vjp(g, out, *node.inputs, **node.params)
        for parent, ig in zip(node.parents, in_grads):
            if parent is None:
                continue
            if ig is None:
                if pending is not None and parent._node is None:
                    _used(pending, parent, on_leaf_done)
                continue
            if ig.shape != parent.data.shape or ig.dtype != parent.data.dtype:
                raise RuntimeError(
                    f"VJP of {prim.name} returned a gradient of shape {ig.shape} dtype "
                    f"{ig.dtype} for an input of shape {parent.shape} dtype {parent.dtype}"
                )
            if parent._node is None:  # a leaf: keep the gradient
                if parent.grad is not None:
                    parent.grad = parent.grad + ig
                elif ig.base is not None or id(ig) in handed_out:
                    parent.grad = ig.copy()  # a view, or shared (add hands g to both sides)
                else:
                    parent.grad = ig  # a fresh array: keep it, no copy
                handed_out.add(id(parent.grad))
                if pending is not None:
                    _used(pending, parent, on_leaf_done)
            else:
                if parent._node not in grads:  # its first gradient: schedule the node
                    heapq.heappush(heap, (-parent._node.seq, parent._node))
                _accumulate(grads, parent._node, parent._index, ig)


def _used(pending, leaf, on_leaf_done):
    """One edge into `leaf` is done; the last one completes its gradient."""
    _, n = pending[id(leaf)]
    pending[id(leaf)] = (leaf, n - 1)
    if n == 1:
        on_leaf_done(leaf)
