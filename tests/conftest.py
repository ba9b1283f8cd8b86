"""Shared test set-up: hypothesis profiles, the backend fixture, named tolerances."""

import os

from gpu import cuda_available

# Numba's CUDA kernels (gpu/numba_cuda/) run on its simulator where there is no device;
# the variable must be set before numba.cuda is first imported.
if not cuda_available():
    os.environ.setdefault("NUMBA_ENABLE_CUDASIM", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from hypothesis import HealthCheck, settings  # noqa: E402

# Numba compiles on first call, so no per-example deadline. CI runs fewer examples.
settings.register_profile(
    "dev", max_examples=40, deadline=None, print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(
    "ci", max_examples=20, deadline=None, print_blob=True, derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(  # before a release: HYPOTHESIS_PROFILE=thorough pytest
    "thorough", max_examples=500, deadline=None, print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile(
    "ci" if os.environ.get("CI") else os.environ.get("HYPOTHESIS_PROFILE", "dev")
)


@pytest.fixture(params=["numpy", pytest.param("cupy", marks=pytest.mark.gpu)])
def xp(request):
    """The array module to test on: NumPy always, CuPy where a CUDA device is present."""
    if request.param == "cupy":
        if not cuda_available():
            pytest.skip("no CUDA device with CuPy here")
        import cupy

        return cupy
    return np
