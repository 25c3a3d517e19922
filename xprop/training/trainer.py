"""The book's ``Trainer`` (ch. 6, ``common/trainer.py``): minibatch training with evaluation.

The loop is the book's — random minibatches drawn with replacement, ``network.gradient``,
``optimizer.update(network.params, grads)``, accuracy on a sample (or all) of the training
and test data once per epoch — with what research code on any backend needs: the steps run
through the network's compiled step (``net.compile_step(optimizer)``: ``jax.jit`` on JAX, a
CUDA graph for PyTorch on CUDA, the eager step elsewhere), the steps between two
evaluations in one ``step.run``; indices drawn on the host from a seeded generator (the same
batches on every backend, and on either path); losses kept on the device and read once per
epoch (no host sync per step); a tqdm bar on a terminal and plain lines otherwise; a clear
error when the loss diverges; and, with ``comm=``, data-parallel training on MPI ranks
(:mod:`xprop.distributed`).  ``compiled=False`` runs the book's loop line by line.
``max_iter=`` trains an exact number of steps, and ``report=`` receives every evaluation
(an :class:`Evaluation`) and writes its line.
"""

from __future__ import annotations

import math
import secrets
import sys
import time
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

from xprop._namespace import check_count, check_flag, namespace
from xprop.backend import Backend, get_backend
from xprop.nets.network import Network
from xprop.optimizers import get_optimizer
from xprop.training.compile import compile_step

__all__ = ["Evaluation", "Trainer"]


class Evaluation(NamedTuple):
    """One evaluation of a :class:`Trainer` run: what ``report`` receives.

    Attributes
    ----------
    epoch : int
        How many epochs' evaluations have been made, this one included (``1`` for the
        evaluation after the first step: the book's ``epoch:1``); the last epoch's number
        for the final evaluation.
    iteration : int
        The step after which it was measured, counted from 0.
    train_loss : float
        The mean loss of the steps since the previous evaluation (NaN if none).
    train_acc, test_acc : float
        The accuracies: on the evaluation samples (``evaluate_sample_num_per_epoch``) for
        an epoch's evaluation; for the final one, ``train_acc`` on the training sample and
        ``test_acc`` on all the test data (:attr:`Trainer.test_acc`).
    seconds : float
        How long the evaluation took (reading the losses, the accuracies), timed from the
        moment the device had finished the steps before it.
    final : bool
        Whether this is the evaluation after the last step, made by :meth:`Trainer.train`.
    """

    epoch: int
    iteration: int
    train_loss: float
    train_acc: float
    test_acc: float
    seconds: float
    final: bool


class Trainer:
    """Train ``network`` on ``(x_train, t_train)``, evaluating once per epoch.

    Parameters
    ----------
    network : Network
        A network on :class:`~xprop.nets.network.Network` (:class:`~xprop.TwoLayerNet`,
        :class:`~xprop.MultiLayerNetExtend`, your own); with ``compiled=False`` any object
        with ``params``, ``gradient(x, t)``, ``loss(x, t)`` and ``accuracy(x, t)``.
    x_train, t_train, x_test, t_test : array
        Data and labels (integer or one-hot) on the network's backend and device; Python
        lists, or arrays of another library or device, raise ``TypeError`` naming the fix.
    epochs : int
        Length of training: ``int(epochs * iter_per_epoch)`` steps, where
        ``iter_per_epoch = max(len(x_train) / mini_batch_size, 1)``; ``max_iter`` overrides
        it.
    mini_batch_size : int
        Samples per step, drawn at random with replacement (the book's ``np.random.choice``).
    optimizer : str or Optimizer
        A name (``"SGD"``, ``"Momentum"``, ``"Nesterov"``, ``"NesterovPaper"``,
        ``"AdaGrad"``, ``"RMSprop"``, ``"Adam"``, any case) or an optimizer object.
    optimizer_param : dict, optional
        Hyperparameters for a named optimizer; default ``{"lr": 0.01}`` (the book's, for every
        optimizer).  Not allowed with an optimizer object.
    evaluate_sample_num_per_epoch : int, optional
        Evaluate on the first this many training and test samples; ``None``: all of them.
    verbose : bool
        Report progress: a tqdm bar on a terminal (when tqdm is installed), else one line
        per epoch; and the final test accuracy (or the lines ``report`` writes).
    max_iter : int, optional
        The exact number of steps to train, in place of ``int(epochs * iter_per_epoch)``;
        the evaluations keep the epochs' schedule (see Notes).
    report : callable, optional
        ``report(evaluation) -> str | None``, called with an :class:`Evaluation` after
        every epoch's evaluation and, in place of the book's final lines, once after the
        last step (``final=True``; the final evaluation then also measures the training
        accuracy).  Called on every rank whatever ``verbose``; when ``verbose``, the line it
        returns is printed in place of the book's (through the bar on a terminal), and
        ``None`` prints nothing.  An exception it raises (a ``FloatingPointError`` for a
        run that goes wrong, say) stops training.
    seed : int, optional
        Seed of the host generator that draws the minibatch indices.  With ``comm=``, every
        rank passes the same seed (compared at construction), or none: rank 0 then draws
        one for all ranks, which must draw the same indices.
    compiled : bool, optional
        Train through the network's compiled step (the default for networks on
        :class:`~xprop.nets.network.Network`); ``False`` runs the book's loop,
        ``grads = network.gradient(...)``; ``optimizer.update(...)``, step by step (the
        default for other networks); ``True`` insists, and raises ``TypeError`` naming what
        the network lacks.
        Both draw the same minibatches and give the same numbers up to rounding (plain SGD
        is computed as ``lr`` backpropagated, and a compiled step draws Dropout masks on
        the device: the masks of ``dropout_device_masks=True``).  Data parallel
        (``comm=``) runs the book's loop, its gradients averaged between the ranks.
    backend : Backend, optional
        Where the indices go; default: ``network.backend``, else the selected backend.
    comm : DataParallel or mpi4py communicator, optional
        Train data-parallel on the communicator's ranks (:mod:`xprop.distributed`); every
        rank runs the same script.  ``mini_batch_size`` is the global batch (it must divide
        by the number of ranks): every rank draws the same indices, computes the gradient
        of its slice, and the ranks average their gradients before the optimizer's update,
        so the run is the single-process run up to rounding — for networks without
        Dropout or BatchNorm.  Every rank passes the whole data set and the same arguments:
        the settings that fix how many collectives a rank makes (the numbers of training
        and test samples, ``mini_batch_size``, ``epochs``, ``max_iter``,
        ``evaluate_sample_num_per_epoch``, whether ``report`` is given) and ``seed`` are
        compared at construction, and a difference (one shard of the data per rank, say) raises
        :class:`~xprop.distributed.DistributedError` on every rank, naming each rank's
        value, where the ranks would otherwise wait for each other forever.  Rank 0's
        parameters are broadcast at construction; the evaluations are shared between the
        ranks; only rank 0 reports.  BatchNorm normalizes over each rank's slice (as
        PyTorch's DistributedDataParallel without SyncBatchNorm), and its running
        statistics are averaged over the ranks before each evaluation; Dropout masks
        come from each rank's copy of the network's generator (seed the ranks' networks
        differently for independent masks: the weights are rank 0's anyway).

    Attributes
    ----------
    train_loss_list : list of float
        The loss of every step: that of the forward pass that computed the gradient (before
        the update, in training mode), which xprop's networks keep in ``last_loss``, saving
        the book's extra forward pass (a network without ``last_loss`` gets the book's
        ``network.loss(x_batch, t_batch)`` after the update).  Filled once per epoch (and at
        the end of :meth:`train`): the losses wait on the device.
    train_acc_list, test_acc_list : list of float
        Accuracies of each epoch's evaluation (not the final one).
    test_acc : float or None
        The accuracy on all test data after :meth:`train`.

    Notes
    -----
    Evaluations happen at steps ``0, iter_per_epoch, 2 * iter_per_epoch, ...`` rounded up
    (the book tests ``current_iter % iter_per_epoch == 0``, which misses every epoch after
    the first when ``iter_per_epoch`` is not an integer).

    An exception in :meth:`train` (Ctrl-C, a ``report`` that raises) leaves the trainer
    where it stopped, and ``train()`` again goes on from there: exactly ``max_iter``
    updates and every evaluation in all.  A step counts once its update is made (one cut
    short is taken again on the same minibatch); an evaluation cut short is finished
    first, keeping what it had measured.  The progress bar's clock stops during the
    evaluations: its rate and ETA are the steps'.
    """

    def __init__(
        self,
        network: Any,
        x_train: Any,
        t_train: Any,
        x_test: Any,
        t_test: Any,
        epochs: int = 20,
        mini_batch_size: int = 100,
        optimizer: Any = "SGD",
        optimizer_param: Mapping[str, float] | None = None,
        evaluate_sample_num_per_epoch: int | None = None,
        verbose: bool = True,
        *,
        max_iter: int | None = None,
        report: Callable[[Evaluation], str | None] | None = None,
        seed: int | None = None,
        backend: Backend | None = None,
        comm: Any = None,
        compiled: bool | None = None,
    ) -> None:
        for name in ("params", "gradient", "loss", "accuracy"):
            if not hasattr(network, name):
                raise TypeError(
                    f"network must have params, gradient, loss and accuracy (like "
                    f"xprop.MultiLayerNetExtend); {type(network).__name__} has no {name!r}"
                )
        if compiled is not None:
            check_flag(compiled, "compiled")
        check_count(epochs, "epochs")
        check_count(mini_batch_size, "mini_batch_size")
        if evaluate_sample_num_per_epoch is not None:
            check_count(evaluate_sample_num_per_epoch, "evaluate_sample_num_per_epoch")
        if max_iter is not None:
            max_iter = check_count(max_iter, "max_iter")
        if report is not None and not callable(report):
            raise TypeError(f"report must be callable, got {type(report).__name__} {report!r}")
        xp = _check_data(network, x_train, t_train, x_test, t_test)
        for what, x, t in (("training", x_train, t_train), ("test", x_test, t_test)):
            if x.shape[0] != t.shape[0]:
                raise ValueError(
                    f"the {what} data have {x.shape[0]} samples but {t.shape[0]} labels; "
                    "they must match"
                )
            if x.shape[0] == 0:
                raise ValueError(f"the {what} data are empty; pass at least one sample")
        if isinstance(optimizer, str) and optimizer_param is None:
            optimizer_param = {"lr": 0.01}  # the book's default, whatever the optimizer
        train_size = x_train.shape[0]
        iter_per_epoch = max(train_size / mini_batch_size, 1)
        if max_iter is None:
            max_iter = int(epochs * iter_per_epoch)
        self.dp = _data_parallel(comm)
        local_batch = mini_batch_size
        if self.dp is not None:
            # These settings fix how many collectives each rank makes (steps, evaluations,
            # the final training accuracy): ranks that differ would wait for each other
            # forever, so they are compared before anything else moves (one allgather).
            self.dp.check_equal(
                {
                    "training samples": int(train_size),
                    "test samples": int(x_test.shape[0]),
                    "mini_batch_size": mini_batch_size,
                    "epochs": epochs,
                    "max_iter": max_iter,
                    "evaluate_sample_num_per_epoch": evaluate_sample_num_per_epoch,
                    "report": "given" if report is not None else None,
                    "compiled": compiled,
                    "BatchNorm running statistics": len(getattr(network, "running_stats", dict)()),
                    "seed": seed,
                },
                "Trainer's settings (every rank passes the whole data set and the same "
                "arguments: the ranks draw the same minibatch indices and each computes "
                "its slice of them, so a shard of the data per rank does not work)",
            )
            local_batch = self.dp.local_batch_size(mini_batch_size)  # divides, or a clear error
            if seed is None and self.dp.size > 1:
                # Every rank must draw the same minibatch indices (each computes its slice
                # of them): without a seed, rank 0 draws one for all.
                seed = self.dp.comm.bcast(secrets.randbits(63), root=0)
        _check_batch_norm_batch(network, local_batch, mini_batch_size)
        if self.dp is not None:
            self.dp.broadcast_params(network.params)  # every rank starts from rank 0's
            verbose = verbose and self.dp.is_root
        self.network = network
        self.verbose = verbose
        self.report = report
        self.x_train, self.t_train = x_train, t_train
        self.x_test, self.t_test = x_test, t_test
        self.epochs = epochs
        self.batch_size = mini_batch_size
        self.evaluate_sample_num_per_epoch = evaluate_sample_num_per_epoch
        self.optimizer = get_optimizer(optimizer, optimizer_param)
        #: The compiled step the steps run through, or None for the book's loop.
        self.step = None
        if compiled is None:  # compiled where the network follows the model a step trains
            compiled = self.dp is None and isinstance(network, Network)
        if compiled and self.dp is not None:
            raise ValueError(
                "compiled=True with comm=: data-parallel training runs the book's loop (the "
                "ranks average their gradients between the gradient and the update); leave "
                "compiled unset or pass compiled=False"
            )
        if compiled:
            self.step = compile_step(network, self.optimizer)

        self.backend = get_backend(backend or getattr(network, "backend", None))
        self._xp = xp
        self._rng = self.backend.rng(seed)
        self.train_size = train_size
        self.iter_per_epoch = iter_per_epoch
        self.max_iter = max_iter
        self.current_iter = 0
        self.current_epoch = 0
        self._next_eval = 0.0

        self.train_loss_list: list[float] = []
        self.train_acc_list: list[float] = []
        self.test_acc_list: list[float] = []
        self.test_acc: float | None = None
        self._pending: list[Any] = []  # this epoch's losses, still on the device
        self._block: Any = None  # minibatch indices of the coming steps, on the device
        self._block_steps = self._cursor = 0
        self._drawn: Any = None  # compiled path: host index rows drawn, not yet trained on
        self._owed: _Owed | None = None  # an evaluation that an exception cut short
        self._bar: Any = None
        self._bar_waits = False  # train() starts the bar after the evaluation due first
        self._uses_last_loss = hasattr(network, "last_loss")

    def train_step(self) -> None:
        """One minibatch step; evaluates when an epoch begins (the book's ``train_step``).

        A step counts once its update is made: an exception before that (a
        ``KeyboardInterrupt`` in the gradient, say) leaves the step to be taken again, on
        the same minibatch, and one in the evaluation after it leaves the evaluation owed,
        made first by the next call (or :meth:`train`).
        """
        if self._owed is not None:
            if self._owed.final:  # training goes on: train() will make a new final one
                self._owed = None
            else:
                self._finish_evaluation()
        if self.step is not None:
            self._run_steps(1)
            return
        xp, net = self._xp, self.network
        idx = self._next_indices()
        x_batch = xp.take(self.x_train, idx, axis=0)
        t_batch = xp.take(self.t_train, idx, axis=0)

        grads = net.gradient(x_batch, t_batch)
        if self.dp is not None:  # the mean over the ranks: the global batch's gradient
            grads = self.dp.average_gradients(grads)
        self.optimizer.update(net.params, grads)
        # The gradient pass's loss where the network keeps it: no extra forward pass.
        loss = net.last_loss if self._uses_last_loss else net.loss(x_batch, t_batch)
        # The step is made: count it before anything else can fail.
        self._cursor += 1
        self.current_iter += 1
        self._pending.append(loss)
        if self._bar is not None:
            self._bar.update(1)
        self._evaluate_if_due(self.current_iter - 1)

    def _next_indices(self) -> Any:
        """This step's minibatch indices, from a block of an epoch's steps on the device.

        The indices are drawn on the host (the same numbers on every backend), an epoch's
        worth at a time: one draw of ``(k, B)`` holds the numbers of ``k`` draws of ``B``,
        and one copy to the device per epoch spares each step a host-to-device copy.  The
        step moves the cursor on once it has updated the parameters.
        """
        if self._cursor >= self._block_steps:
            left = max(self.max_iter - self.current_iter, 1)
            steps = min(math.ceil(self.iter_per_epoch), left)
            block = self._rng.choice(self.train_size, (steps, self.batch_size))
            if self.dp is not None:  # data parallel: this rank's slice of each global batch
                block = self.dp.shard(block)
            self._block, self._block_steps, self._cursor = block, steps, 0
        return self._block[self._cursor, ...]

    def _run_steps(self, steps: int) -> None:
        """``steps`` compiled steps in one ``step.run``; evaluates if the last one is due.

        The indices come from the generator that :meth:`_next_indices` draws from, in the
        same order: the same minibatches as the book's loop.
        """
        drawn = self._drawn  # rows drawn for a run that an exception stopped, if any
        have = 0 if drawn is None else drawn.shape[0]
        if have < steps:
            more = self._rng.generator.integers(
                0, self.train_size, (steps - have, self.batch_size), dtype="int64"
            )  # HostRNG.choice's numbers; the step copies them to the device once
            drawn = more if drawn is None else namespace(more).concat([drawn, more])
        self._drawn = drawn  # kept until the run is made: a retry trains on the same rows
        losses = self.step.run(self.x_train, self.t_train, drawn[:steps, ...])
        self._drawn = drawn[steps:, ...] if drawn.shape[0] > steps else None
        self.current_iter += steps
        self._pending.append(losses)
        if self._bar is not None:
            self._bar.update(steps)
        self._evaluate_if_due(self.current_iter - 1)

    def _steps_to_evaluation(self) -> int:
        """The steps from now up to the next evaluation (included) or the end."""
        due = max(math.ceil(self._next_eval), self.current_iter)
        return min(due - self.current_iter + 1, self.max_iter - self.current_iter)

    def train(self) -> float:
        """Run all ``max_iter`` steps, then return the accuracy on all the test data."""
        # The bar starts after an evaluation due first (after step 0, say): its clock and
        # rate are the steps', not the first evaluation's nor a warm-up step's alone.
        self._bar_waits = self._owed is not None or self.current_iter >= self._next_eval
        self._bar = None if self._bar_waits else self._progress_bar()
        try:
            if self._owed is not None and not self._owed.final:
                self._finish_evaluation()  # the one an exception (Ctrl-C) cut short
            if self.step is not None:
                while self.current_iter < self.max_iter:
                    self._run_steps(self._steps_to_evaluation())
            for _ in range(self.max_iter - self.current_iter):
                self.train_step()
            if self._owed is None:
                self._owed = _Owed(self.current_iter - 1, final=True)
            self._finish_evaluation()
        finally:
            self._bar_waits = False
            if self._bar is not None:
                self._bar.close()
                self._bar = None
        return self.test_acc

    def _samples(self) -> tuple[Any, Any, Any, Any]:
        """The training and test data an epoch's evaluation measures."""
        x_train, t_train, x_test, t_test = self.x_train, self.t_train, self.x_test, self.t_test
        n = self.evaluate_sample_num_per_epoch
        if n is not None:  # the first n, or all there are (the standard has no slice stop
            # past the end: array_api_strict refuses one)
            m = min(n, x_train.shape[0])
            x_train, t_train = x_train[:m, ...], t_train[:m, ...]
            m = min(n, x_test.shape[0])
            x_test, t_test = x_test[:m, ...], t_test[:m, ...]
        return x_train, t_train, x_test, t_test

    def _wait_for_steps(self) -> float:
        """Wait for the device to finish the steps queued so far; the time then."""
        self.backend.synchronize(*self._pending, *self.network.params.values())
        return time.perf_counter()

    def _evaluate_if_due(self, iteration: int) -> None:
        """The epoch's evaluation after step ``iteration`` if one is due."""
        if iteration >= self._next_eval:
            self._next_eval += self.iter_per_epoch
            self.current_epoch += 1
            self._owed = _Owed(iteration)
            self._finish_evaluation()

    def _finish_evaluation(self) -> None:
        """Make the owed evaluation: the losses read, the accuracies, the report.

        Each part is kept as soon as it is measured, so an evaluation that an exception
        (Ctrl-C) cut short is finished by the next :meth:`train` or :meth:`train_step`
        without measuring any part twice or losing the losses read.
        """
        owed = self._owed
        if owed.mean_loss is None:
            owed.start = self._wait_for_steps()
            owed.mean_loss = self._flush_losses()
        if owed.final:
            if owed.test_acc is None:
                owed.test_acc = self._accuracy(self.x_test, self.t_test)
            self.test_acc = owed.test_acc
            if self.report is not None and owed.train_acc is None:
                owed.train_acc = self._accuracy(*self._samples()[:2])
        else:
            x_train, t_train, x_test, t_test = self._samples()
            if owed.train_acc is None:
                owed.train_acc = self._accuracy(x_train, t_train)
            if owed.test_acc is None:
                owed.test_acc = self._accuracy(x_test, t_test)
            if not owed.recorded:
                self.train_acc_list.append(owed.train_acc)
                self.test_acc_list.append(owed.test_acc)
                owed.recorded = True
        if self.report is not None:
            evaluation = Evaluation(
                self.current_epoch, owed.iteration, owed.mean_loss, owed.train_acc,
                owed.test_acc, time.perf_counter() - owed.start, final=owed.final,
            )  # fmt: skip
            lines = [self.report(evaluation)]
        elif owed.final:
            lines = [
                "=============== Final Test Accuracy ===============",
                f"test acc:{owed.test_acc:.4f}",
            ]
        else:
            lines = [
                f"=== epoch:{self.current_epoch}, train loss:{owed.mean_loss:.4f}, "
                f"train acc:{owed.train_acc:.4f}, test acc:{owed.test_acc:.4f} ==="
            ]
        self._owed = None
        for line in lines:
            self._say(line)
        if self._bar is None and self._bar_waits and not owed.final:
            self._bar_waits = False
            self._bar = self._progress_bar()  # from here on: the steps after it
        if self._bar is not None:
            # The bar's clock counts the steps only: its rate and ETA leave the evaluations
            # out (the first one, on the whole data, may take longer than many steps).
            self._bar.unpause()
            if not owed.final:
                self._bar.set_postfix(
                    train_acc=f"{owed.train_acc:.4f}", test_acc=f"{owed.test_acc:.4f}"
                )

    def _say(self, line: str | None) -> None:
        """Print ``line`` when verbose (through the bar on a terminal); ``None``: nothing."""
        if not self.verbose or line is None:
            return
        if self._bar is not None:
            self._bar.write(line)
        else:
            print(line, flush=True)

    def _flush_losses(self) -> float:
        """Read the pending losses from the device (one read); their mean, or NaN if none."""
        if not self._pending:
            return math.nan
        xp = self._xp
        flat = [xp.reshape(xp.asarray(v), (-1,)) for v in self._pending]  # 0-d, or (k,)
        losses = self.backend.to_numpy(xp.concat(flat)).tolist()
        if self.dp is not None:  # each rank's loss is on its slice: the mean is the batch's
            losses = self.dp.average(losses)
        start = len(self.train_loss_list)
        self._pending = []  # read: kept in the list from here on
        self.train_loss_list.extend(losses)
        bad = next((i for i, v in enumerate(losses) if not math.isfinite(v)), None)
        if bad is not None:
            raise FloatingPointError(
                f"the training loss became {losses[bad]} at step {start + bad} "
                f"({self.optimizer!r}); training diverged: lower the learning rate"
            )
        return sum(losses) / len(losses)

    def _accuracy(self, x: Any, t: Any) -> float:
        """The network's accuracy; data parallel, each rank scores a slice of ``x``."""
        if self.dp is None:
            return self.network.accuracy(x, t)
        stats = getattr(self.network, "running_stats", dict)()
        if stats:  # BatchNorm's statistics of each rank's slices: the ranks' mean
            self.network.set_running_stats(
                self.dp.average_arrays(stats, "BatchNorm running statistics")
            )
        return self.dp.accuracy(self.network, x, t)

    def _progress_bar(self) -> Any:
        if not (self.verbose and sys.stdout.isatty()):
            return None
        try:
            from tqdm import tqdm
        except ImportError:
            return None
        return tqdm(
            total=self.max_iter, initial=self.current_iter, file=sys.stdout, unit="it",
            dynamic_ncols=True,
        )  # fmt: skip


def _data_parallel(comm: Any) -> Any:
    """A :class:`~xprop.distributed.DataParallel` for ``comm`` (as is if it is one), or None."""
    if comm is None:
        return None
    from xprop.distributed import DataParallel

    return comm if isinstance(comm, DataParallel) else DataParallel(comm)


class _Owed:
    """An evaluation being made: what has been measured so far (``None``: not yet)."""

    def __init__(self, iteration: int, *, final: bool = False) -> None:
        self.iteration = iteration
        self.final = final
        self.start = time.perf_counter()
        self.mean_loss: float | None = None
        self.train_acc: float | None = None
        self.test_acc: float | None = None
        self.recorded = False  # appended to train_acc_list and test_acc_list


def _check_data(network: Any, *arrays: Any) -> Any:
    """The namespace of the data, checked to be arrays of the network's library and device.

    Raises ``TypeError`` naming the data's type and library and the fix: Python lists
    (convert them with ``backend.asarray``), arrays of two libraries, or data of another
    library or device than the network's parameters (which would fail later, deep in a
    layer, with the library's own message).
    """
    xp = namespace(*arrays)  # lists, strings and mixed libraries: a clear TypeError
    backend = getattr(network, "backend", None)
    if not isinstance(backend, Backend):
        return xp
    from array_api_compat import device as device_of

    from xprop.libraries import library_for

    data_library = library_for(xp).name
    if data_library != backend.library.name:
        raise TypeError(
            f"the data are {data_library} arrays ({type(arrays[0]).__module__}."
            f"{type(arrays[0]).__qualname__}) but the network is on {backend.name}; convert "
            f"the data with network.backend.asarray(...) (e.g. xprop.get_backend("
            f"{backend.name!r}).asarray(x)) or build the network on the data's backend "
            f"(backend=xprop.get_backend({data_library!r}))"
        )
    wrong = {
        str(device_of(a))
        for a in arrays
        if device_of(a) != backend.device and str(device_of(a)) != str(backend.device)
    }
    if wrong:
        raise TypeError(
            f"the data are on {', '.join(sorted(wrong))} but the network is on "
            f"{backend.device}; put them on the network's device with "
            "network.backend.asarray(...)"
        )
    return xp


def _check_batch_norm_batch(network: Any, local: int, global_batch: int) -> None:
    """Raise ``ValueError`` when a BatchNorm layer would train on batches of one sample.

    Caught here, before anything runs, rather than at the first step (where the layer
    itself raises): the variance of one sample is 0, so BatchNorm would output ``beta``.
    """
    from xprop.nn.batch_norm import BatchNormalization

    layers = getattr(network, "layers", None)
    if local >= 2 or not isinstance(layers, Mapping):
        return
    names = [name for name, layer in layers.items() if isinstance(layer, BatchNormalization)]
    if names:
        per_rank = "" if local == global_batch else f" ({global_batch} over the ranks)"
        raise ValueError(
            f"mini_batch_size gives training batches of {local} sample{per_rank}, but "
            f"{type(network).__name__} has BatchNormalization layers ({', '.join(names)}), "
            "whose batch variance is 0 on one sample (the output would be beta); use "
            "mini_batch_size >= 2 per rank, or a network without BatchNorm"
        )
