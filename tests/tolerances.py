"""Named tolerances: every comparison in the tests says which kind it is."""

import numpy as np

# One place for tolerances, by what is being compared.
TOLERANCES = {
    "exact64": dict(rtol=1e-12, atol=1e-12),  # float64, same arithmetic in another order
    "float64": dict(rtol=1e-9, atol=1e-10),  # float64 against another library
    "float32": dict(rtol=1e-5, atol=1e-6),  # float32 against another library
    "grad": dict(rtol=1e-4, atol=1e-6),  # float32 gradients against another library
}


def assert_close(actual, expected, kind="float64"):
    """Compare arrays (or Tensors) with the tolerance named by `kind`."""
    from autograd import as_array, to_numpy

    actual = to_numpy(as_array(actual))
    expected = to_numpy(as_array(expected))
    assert actual.shape == expected.shape, f"shapes differ: {actual.shape} vs {expected.shape}"
    np.testing.assert_allclose(actual, expected, **TOLERANCES[kind])
