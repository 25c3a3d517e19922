"""Data-parallel training on MPI: the same script on one process, on N, on a cluster.

Every rank (process) holds the whole network and the whole data set.  Each step, every rank
draws the *same* global minibatch indices from the seeded host generator, takes its own
contiguous slice of them (:meth:`DataParallel.shard`), computes the gradient of its slice,
and the ranks average their gradients (:meth:`DataParallel.average_gradients`: one buffer
for all parameters, one ``Allreduce``).  The network's loss is a mean over the batch, so
the average of equal slices' mean gradients is the mean gradient of the global batch: N
ranks with global batch ``B`` take the step one process takes with batch ``B``, up to
floating-point rounding.  Ranks start identical (:meth:`DataParallel.broadcast_params`)
and stay identical, since they apply the same update to the same parameters.

MPI is reached through mpi4py (``pip install 'xprop[mpi]'`` installs mpi4py and MPICH with
its ``mpiexec``)::

    dp = DataParallel()  # mpi4py.MPI.COMM_WORLD; DataParallel(comm) for any communicator
    net = xprop.TwoLayerNet(784, 50, 10, backend=dp.get_backend(), seed=0)
    dp.broadcast_params(net.params)  # every rank starts from rank 0's parameters
    for i in range(iters):
        idx = dp.shard(rng.choice(60000, 1024))  # this rank's slice of the global batch
        grads = net.gradient(xp.take(x_train, idx, axis=0), xp.take(t_train, idx, axis=0))
        grads = dp.average_gradients(grads)  # in place; a new dict on JAX
        for key in net.params:
            net.params[key] -= lr * grads[key]
    acc = dp.accuracy(net, x_test, t_test)  # each rank scores a slice; the counts are summed

    $ mpiexec -n 2 python train.py

What each array library needs (host buffers, a CUDA-aware MPI reading GPU memory, JAX's
immutable arrays) lives in its :class:`~xprop.ArrayLibrary` (``pack``/``unpack``); this
package only speaks MPI.  Nothing here hangs on a mistake: the ranks compare the names,
shapes and dtypes of what they exchange once, before the first collective on data, and
raise the same :class:`DistributedError` on every rank when they differ; a rank that fails
with any other error aborts them all, naming itself and the error.  Importing this package
does not import mpi4py: :class:`DataParallel` does.  Like :mod:`xprop.checkpoint`, it works
with host buffers and imports NumPy.

The package, one idea a module: :mod:`~xprop.distributed.collectives` (:class:`DataParallel`),
:mod:`~xprop.distributed.layout` (what the ranks compare before an exchange),
:mod:`~xprop.distributed.abort` (one rank fails, every rank ends),
:mod:`~xprop.distributed.mpi` (importing mpi4py, CUDA-awareness),
:mod:`~xprop.distributed.placement` (a GPU per rank; JAX ranks sharing one) and
:mod:`~xprop.distributed.errors`.  Everything a program needs is importable from here.
"""

from __future__ import annotations

from xprop.distributed.abort import ABORT_GRACE_S  # noqa: F401  (as before the split)
from xprop.distributed.collectives import DataParallel
from xprop.distributed.errors import DistributedError
from xprop.distributed.mpi import (  # noqa: F401  (ENV_CUDA_AWARE: as before the split)
    ENV_CUDA_AWARE,
    INSTALL_HINT,
    mpi_is_cuda_aware,
)
from xprop.distributed.placement import device_for_local_rank

__all__ = [
    "INSTALL_HINT",
    "DataParallel",
    "DistributedError",
    "device_for_local_rank",
    "mpi_is_cuda_aware",
]
