"""What the architecture itself allows: the best in-domain MSE a 1-N-1 ReLU network can reach.

A network of ``num_neurons`` ReLU units is a continuous piecewise-linear function with at
most ``num_neurons`` kinks, so at best ``num_neurons + 1`` equal linear pieces over the
domain. On a piece of width h the best line misses x² by h²/8 at its ends and middle and
its mean squared error is h⁴/180; with h = mid_range / (num_neurons + 1) that is the limit
no training can beat (1-10-1 over [-5, 5]: (10/11)⁴/180 = 0.0037945).
"""

from __future__ import annotations

MSE_LIMIT_DIVISOR = 180


def mse_limit(mid_range: float, num_neurons: int) -> float:
    """The lowest in-domain MSE a 1-``num_neurons``-1 ReLU network can reach on x²."""
    piece = mid_range / (num_neurons + 1)
    return float(piece**4 / MSE_LIMIT_DIVISOR)
