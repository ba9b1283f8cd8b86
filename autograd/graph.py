"""The graph: nodes recorded by primitives, reverse-mode backward, and `no_grad`.

Each primitive call that involves a Tensor requiring gradients records one `Node`: which
primitive ran, its parents (the input Tensors that need gradients), the raw input arrays
and static parameters, and the raw output. Backward visits nodes in reverse topological
order (found iteratively, so a chain of 100,000 ops does not touch Python's recursion
limit), calls each node's VJP once with the summed gradient of its output, frees that
gradient, and passes the results on. Gradients reaching a leaf Tensor (one made by the user
with `requires_grad=True`) are added to its `.grad`.
"""

_grad_enabled = True


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


class Node:
    """One primitive application in the graph."""

    __slots__ = ("primitive", "parents", "inputs", "params", "out")

    def __init__(self, primitive, parents, inputs, params, out):
        self.primitive = primitive  # the Primitive that ran
        self.parents = parents  # per input: the Tensor if it needs a gradient, else None
        self.inputs = inputs  # raw input arrays (and scalars), as the VJP wants them
        self.params = params  # static keyword parameters
        self.out = out  # raw output (a tuple for multiple-output primitives)


def toposort(root):
    """Nodes reachable from `root`, each after every node that consumes its output."""
    order = []
    visited = {root}
    stack = [(root, iter(root.parents))]
    while stack:
        node, parents = stack[-1]
        for p in parents:
            child = p._node if p is not None else None
            if child is not None and child not in visited:
                visited.add(child)
                stack.append((child, iter(child.parents)))
                break
        else:  # all parents done: post-order
            stack.pop()
            order.append(node)
    order.reverse()  # root first
    return order


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


def backward(tensor, grad):
    """Propagate `grad` (= dLoss/d tensor, a raw array) back to every leaf's `.grad`."""
    grads = {}
    handed_out = {id(grad)}  # arrays a leaf may not keep as its own .grad (see below)
    _accumulate(grads, tensor._node, tensor._index, grad)
    for node in toposort(tensor._node):
        g = grads.pop(node)  # freed as soon as it is used
        out = node.out
        if isinstance(g, list):  # multiple outputs: zeros where an output got no gradient
            g = tuple(gi if gi is not None else out[i] * 0 for i, gi in enumerate(g))
        prim = node.primitive
        in_grads = prim.vjp(g, out, *node.inputs, **node.params)
        for parent, ig in zip(node.parents, in_grads):
            if parent is None or ig is None:
                continue
            if ig.shape != parent.shape or ig.dtype != parent.dtype:
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
            else:
                _accumulate(grads, parent._node, parent._index, ig)
