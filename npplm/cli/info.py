"""`npplm info`: versions, backend, device, the registered primitives."""

from npplm.cli.common import add_command


def add_parser(sub):
    p = add_command(sub, "info", "versions, backend, device and primitives",
                    "Print npplm's and NumPy's versions, the array backend (NPPLM_BACKEND), "
                    "the CUDA device if any, and the autograd primitives.")
    p.set_defaults(func=run_command)
    return p


def run_command(args):
    import numpy

    import autograd
    import gpu
    import npplm

    print(f"npplm {npplm.__version__}, numpy {numpy.__version__}, backend {autograd.BACKEND}")
    print(f"CUDA device: {gpu.device_name() or 'none'}")
    print(f"{len(autograd.REGISTRY)} primitives: {', '.join(autograd.REGISTRY)}")
