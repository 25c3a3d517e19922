"""Where the ranks of one machine run: one accelerator each, or several sharing one.

:func:`device_for_local_rank` gives each rank on a node its own GPU (modulo their number).
:func:`share_accelerators` makes room for several ranks on one GPU: JAX takes 75 % of the
memory of every GPU it sees when it first uses them, so a second JAX rank on the node
would find too little, fail or fall back to the CPU.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

__all__ = ["ENV_JAX_PREALLOCATE", "device_for_local_rank", "share_accelerators"]

#: JAX's switch for taking most of each GPU's memory at its first use ("false": on demand).
ENV_JAX_PREALLOCATE = "XLA_PYTHON_CLIENT_PREALLOCATE"


def device_for_local_rank(local_rank: int, devices: Sequence[Any]) -> Any:
    """The device of the ``local_rank``-th rank on a node: ``devices[local_rank % len]``.

    Raises ``ValueError`` when there is no device to choose from.
    """
    if not devices:
        raise ValueError("no accelerator to place this rank on; choose a CPU backend")
    return devices[local_rank % len(devices)]


def share_accelerators(local_size: int) -> None:
    """Let ``local_size`` ranks on one node share its GPUs: JAX allocates on demand.

    With more than one rank on the node, sets ``XLA_PYTHON_CLIENT_PREALLOCATE=false``
    unless the environment already sets it (a user's explicit setting wins).  JAX reads it
    when it first initialises its GPU backend (at the first JAX array or device query), so
    this must run before that: :class:`~xprop.distributed.DataParallel` calls it when it is
    made, before ``dp.get_backend()``.  Other libraries allocate on demand already.
    """
    if local_size > 1:
        os.environ.setdefault(ENV_JAX_PREALLOCATE, "false")
