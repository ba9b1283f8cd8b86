"""The primitives, one file per family: elementwise, reduce, shape, linalg."""
