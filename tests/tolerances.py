"""Named tolerances: every comparison in the tests says which kind it is."""

import numpy as np

# One place for tolerances, by what is being compared.
TOLERANCES = {
    "exact64": dict(rtol=1e-12, atol=1e-12),  # float64, same arithmetic in another order
    "float64": dict(rtol=1e-9, atol=1e-9),  # float64 against another library
    "float32": dict(rtol=1e-5, atol=1e-6),  # float32 against another library
    "grad": dict(rtol=1e-4, atol=1e-6),  # float32 gradients against another library
    # Whole models against another library in float32: activations are O(1) after each
    # LayerNorm, so an absolute bound says "the same up to float32 rounding".
    "model32": dict(rtol=0.0, atol=1e-5),
    # A model's parameter gradients in float32, tensor by tensor, relative to the largest
    # entry: max|a - b| <= 1e-4 * max(max|b|, 1e-2 * scale), where `scale` is the largest
    # gradient entry of the whole model (given by the caller). The floor matters where a
    # true gradient is zero and b holds only rounding noise: attention's key bias (softmax
    # ignores a shift shared by every key), a last LayerNorm bias under a QA loss.
    "model_grad32": dict(scaled=1e-4, floor=1e-2),
    # A model loaded from a 16-bit checkpoint against the float32 model it was rounded
    # from: bfloat16 keeps 8 significant bits, so weights move by up to 2^-9 relative.
    "weights16": dict(rtol=0.0, atol=0.05),
}


def assert_close(actual, expected, kind="float64", scale=None):
    """Compare arrays (or Tensors) with the tolerance named by `kind` (`scale`: see above)."""
    from autograd import as_array, to_numpy

    actual = to_numpy(as_array(actual))
    expected = to_numpy(as_array(expected))
    assert actual.shape == expected.shape, f"shapes differ: {actual.shape} vs {expected.shape}"
    tol = TOLERANCES[kind]
    if "scaled" in tol:  # relative to the tensor's largest entry, not entry by entry
        err = float(np.max(np.abs(actual - expected), initial=0.0))
        largest = float(np.max(np.abs(expected), initial=0.0))
        bound = tol["scaled"] * max(largest, tol["floor"] * (largest if scale is None else scale))
        assert err <= bound, (f"max |actual - expected| = {err:.3g} exceeds {bound:.3g} ({kind}:"
                              f" max|expected| = {largest:.3g}, scale = {scale})")
        return
    np.testing.assert_allclose(actual, expected, **tol)
