"""Order-independent means for the numbers a run records.

A float sum depends on the order it is added in, and torch's CPU reductions choose that order from
the tensor's size, thread count and memory alignment, so two runs holding the same values could
write different last bits (a resumed run allocates its tensors elsewhere). ``exact_mean`` rounds
the exact sum once (``math.fsum``), so equal values always give an equal mean.
"""

import math

import torch


def exact_mean(values: torch.Tensor) -> float:
    """Mean of all elements of ``values`` (any shape, any real dtype) as a float: the correctly
    rounded float64 sum divided by the count; NaN for an empty tensor."""
    numbers = values.detach().reshape(-1).tolist()  # Python floats hold every float32/64 value exactly
    if not numbers:
        return math.nan
    return math.fsum(numbers) / len(numbers)
