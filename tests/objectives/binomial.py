"""Bounds for counts of random events, computed from n and p rather than picked by hand."""

import math

SIGMAS = 5.0  # a 5-sigma two-sided bound fails by chance with probability ~6e-7


def assert_binomial(count, n, p, what="count", sigmas=SIGMAS):
    """Assert that `count` is within `sigmas` standard deviations of Binomial(n, p)'s mean.

    The normal approximation is fine for the n p (1 - p) in the hundreds these tests use; a
    half-count continuity allowance keeps a bound around a tiny variance honest.
    """
    mean = n * p
    sd = math.sqrt(n * p * (1 - p))
    bound = sigmas * sd + 0.5
    assert abs(count - mean) <= bound, (f"{what}: {count} of {n} is {abs(count - mean):.1f} "
                                        f"away from n p = {mean:.1f}, more than {sigmas} sd "
                                        f"(sd {sd:.2f}, p = {p})")


def assert_mean(values_sum, n, mean, variance, what="mean", sigmas=SIGMAS):
    """Assert that the average of n independent draws (their sum given) is within `sigmas`
    standard errors of `mean`, for draws of the given variance."""
    average = values_sum / n
    se = math.sqrt(variance / n)
    assert abs(average - mean) <= sigmas * se, (f"{what}: {average:.4f} is more than {sigmas} "
                                                f"standard errors ({se:.4f}) from {mean:.4f}")
