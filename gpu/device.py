"""Is a CUDA device usable, which one, and waiting for it to finish."""

import importlib.util


def cuda_available():
    """True when CuPy is installed and sees at least one CUDA device."""
    if importlib.util.find_spec("cupy") is None:
        return False
    try:
        import cupy

        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:  # no driver, no device, or a broken install: no GPU for us
        return False


def device_name():
    """The name of CUDA device 0, or None without one."""
    if not cuda_available():
        return None
    import cupy

    name = cupy.cuda.runtime.getDeviceProperties(0)["name"]
    return name.decode() if isinstance(name, bytes) else name


def synchronize(xp=None):
    """Block until queued GPU work is done (no-op for NumPy): call it inside timed code."""
    if xp is not None and xp.__name__ == "cupy":
        xp.cuda.get_current_stream().synchronize()
