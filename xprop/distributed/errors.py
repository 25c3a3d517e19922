"""The one exception of :mod:`xprop.distributed`, shared by its modules."""

from __future__ import annotations

__all__ = ["DistributedError"]


class DistributedError(ValueError):
    """MPI is missing, the ranks disagree on what they exchange, or a global batch does not
    divide among them; the message says what to do."""
