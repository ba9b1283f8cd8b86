"""Gradient scaling: the identity forward, a scaled gradient backward.

GLM-130B's "embedding layer gradient shrink" (Zeng et al., arXiv:2210.02414, section 3)
damps the gradient that reaches the word embeddings, where its loss spikes started,
without touching the forward values. Their one line of PyTorch is

    word_embedding = word_embedding * alpha + word_embedding.detach() * (1 - alpha)

which needs a `detach`. Our engine has none, so the same thing is one primitive: the
forward returns x, the VJP returns alpha * g. It is deliberately *not* the derivative of its
forward (that would be 1): finite differences can only check it at alpha = 1, and the
model tests check that alpha scales the embedding gradient exactly.
"""

from autograd import primitive


@primitive
def grad_scale(x, *, alpha):
    """y = x forward; dL/dx = alpha * dL/dy backward. Any shape."""
    return x.copy()  # a fresh array: the output never aliases the input


@grad_scale.defvjp
def grad_scale_vjp(g, out, x, *, alpha):
    return (g * alpha,)
