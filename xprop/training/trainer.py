"""The book's ``Trainer`` (ch. 6, ``common/trainer.py``): minibatch training with evaluation.

The loop is the book's — random minibatches drawn with replacement, ``network.gradient``,
``optimizer.update(network.params, grads)``, accuracy on a sample (or all) of the training
and test data once per epoch — with what research code on any backend needs.  It drives one
step object (:mod:`xprop.training.step`): the network's compiled step by default
(``net.compile_step(optimizer)``: ``jax.jit`` on JAX, a CUDA graph for PyTorch on CUDA), or
with ``compiled=False`` the eager step, which is the book's loop body as it is; the steps
between two evaluations go to one ``step.run`` as rows of minibatch indices drawn on the
host from a seeded generator (the same batches on every backend and path).  Losses are
kept on the device and read once per epoch (no host sync per step); a tqdm bar on a
terminal, plain lines otherwise; a clear error when the loss diverges; with ``comm=``,
data-parallel training on MPI ranks (:mod:`xprop.distributed`), the eager step with its
gradients averaged between the ranks.  ``max_iter=`` trains an exact number of steps, and
``report=`` receives every evaluation (an :class:`Evaluation`) and writes its line.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple, cast

from xprop._namespace import namespace
from xprop.backend import Backend, get_backend
from xprop.checks import check_count, check_data, check_flag, check_model
from xprop.nn.batch_norm import BatchNormalization
from xprop.optimizers import Optimizer, get_optimizer
from xprop.training.compile import compilable, compile_step
from xprop.training.step import DataParallelStep, EagerStep
from xprop.typing import Array

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
    short is taken again on the same minibatch, also inside a ``step.run`` of several
    steps); an evaluation cut short is finished first, keeping what it had measured.  The
    progress bar's clock stops during the evaluations: its rate and ETA are the steps'.
    """

    def __init__(
        self, network: Any, x_train: Array, t_train: Array, x_test: Array, t_test: Array,
        epochs: int = 20, mini_batch_size: int = 100, optimizer: str | Optimizer = "SGD",
        optimizer_param: Mapping[str, float] | None = None,
        evaluate_sample_num_per_epoch: int | None = None, verbose: bool = True, *,
        max_iter: int | None = None, report: Callable[[Evaluation], str | None] | None = None,
        seed: int | None = None, backend: Backend | None = None, comm: Any = None,
        compiled: bool | None = None,
    ) -> None:  # fmt: skip
        check_model(network, ("params", "gradient", "loss", "accuracy"))
        if compiled is not None:
            check_flag(compiled, "compiled")
        check_count(epochs, "epochs")
        check_count(mini_batch_size, "mini_batch_size")
        if evaluate_sample_num_per_epoch is not None:
            check_count(evaluate_sample_num_per_epoch, "evaluate_sample_num_per_epoch")
        if max_iter is not None:
            check_count(max_iter, "max_iter")
        if report is not None and not callable(report):
            raise TypeError(f"report must be callable, got {type(report).__name__} {report!r}")
        self.backend = get_backend(backend or getattr(network, "backend", None))
        like = next(iter(network.params.values()), None)
        self._xp = check_data(like, self.backend.name, x_train, t_train, x_test, t_test)
        if isinstance(optimizer, str) and optimizer_param is None:
            optimizer_param = {"lr": 0.01}  # the book's default, whatever the optimizer
        self.optimizer = get_optimizer(optimizer, optimizer_param)
        self.train_size = x_train.shape[0]
        self.iter_per_epoch = max(self.train_size / mini_batch_size, 1)
        self.max_iter = max_iter or int(epochs * self.iter_per_epoch)
        self.dp = None
        if comm is not None:  # every rank computes its slice of each global batch
            settings = {
                "training samples": int(self.train_size), "test samples": int(x_test.shape[0]),
                "mini_batch_size": mini_batch_size, "epochs": epochs, "max_iter": self.max_iter,
                "evaluate_sample_num_per_epoch": evaluate_sample_num_per_epoch,
                "report": "given" if report is not None else None, "compiled": compiled,
                "seed": seed,
            }  # fmt: skip
            self.step: Any = DataParallelStep(network, self.optimizer, comm, settings)
            self.dp, seed, verbose = self.step.dp, self.step.seed, verbose and self.step.dp.is_root
        elif compiled is False or (compiled is None and not compilable(network)):
            self.step = EagerStep(network, self.optimizer, self.backend, book=True)
        else:
            self.step = compile_step(network, self.optimizer)
        local_batch = getattr(self.step, "local_batch", mini_batch_size)  # per rank
        _check_batch_norm_batch(network, local_batch, mini_batch_size)
        self.network, self.verbose, self.report = network, verbose, report
        self.x_train, self.t_train, self.x_test, self.t_test = x_train, t_train, x_test, t_test
        self.epochs, self.batch_size = epochs, mini_batch_size
        self.evaluate_sample_num_per_epoch = evaluate_sample_num_per_epoch
        self.current_iter = self.current_epoch = 0
        self.train_loss_list: list[float] = []
        self.train_acc_list: list[float] = []
        self.test_acc_list: list[float] = []
        self.test_acc: float | None = None
        self._rng = self.backend.rng(seed)  # draws the minibatch indices, on the host
        self._rows: Any = None  # index rows drawn for the coming steps, not trained on yet
        self._losses: list[Any] = []  # the losses since the last evaluation, on the device
        self._next_eval = 0.0  # the step after which the next epoch's evaluation is due
        self._evaluation: _Evaluation | None = None  # one an exception (Ctrl-C) cut short
        self._bar = _Progress(self)

    def train_step(self) -> None:
        """One minibatch step; evaluates when an epoch begins (the book's ``train_step``).

        An exception (a ``KeyboardInterrupt``) before the step's update leaves the step to
        be taken again, on the same minibatch; one in the evaluation after it leaves the
        evaluation to be finished first by the next call (or :meth:`train`).
        """
        self._resume(final_too=False)
        self._run(1)

    def train(self) -> float:
        """Run all ``max_iter`` steps, then return the accuracy on all the test data."""
        # The bar starts after an evaluation due first (after step 0, say): its clock and
        # rate are the steps', not the first evaluation's.
        self.backend.activate()  # the device whose kernels train (CuPy's current device)
        self._bar.start(waits=self._evaluation is not None or self.current_iter >= self._next_eval)
        try:
            self._resume(final_too=True)
            while self.current_iter < self.max_iter:
                due = max(math.ceil(self._next_eval), self.current_iter)  # the next evaluation
                self._run(min(due - self.current_iter + 1, self.max_iter - self.current_iter))
            if self._evaluation is None:
                self._evaluation = _Evaluation(self.current_iter - 1, final=True)
            self._finish_evaluation()
        finally:
            self._bar.close()
        return cast(float, self.test_acc)  # set by the final evaluation

    def _resume(self, final_too: bool) -> None:
        """Finish what an exception (Ctrl-C) cut short: an epoch's evaluation now, a final
        one at the end of :meth:`train` (none if training goes on), and the evaluation due
        after the last step made."""
        if self._evaluation is not None and not self._evaluation.final:
            self._finish_evaluation()
        elif not final_too:
            self._evaluation = None
        self._evaluate_if_due(self.current_iter - 1)

    def _run(self, steps: int) -> None:
        """``steps`` steps in one ``step.run``; the evaluation after the last, if due.

        The index rows are drawn once and kept until trained on: a run that an exception
        stops has counted each step it made (``on_step``), and the steps it did not make
        are taken next on the same rows.
        """
        have = 0 if self._rows is None else self._rows.shape[0]
        if have < steps:  # HostRNG.choice's numbers, on the host: the step copies them once
            more = self._rng.generator.integers(
                0, self.train_size, (steps - have, self.batch_size), dtype="int64"
            )
            self._rows = more if self._rows is None else namespace(more).concat([self._rows, more])

        def on_step(loss: Array) -> None:  # a step (or k steps at once) made: count it now
            done = 1 if getattr(loss, "ndim", 0) == 0 else int(loss.shape[0])
            self._rows = self._rows[done:, ...] if done < self._rows.shape[0] else None
            self.current_iter += done
            self._losses.append(loss)
            self._bar.update(done)

        rows = self._rows[:steps, ...]
        local = rows if self.dp is None else self.dp.shard(rows)  # this rank's slice
        self.step.run(self.x_train, self.t_train, local, on_step)
        self._evaluate_if_due(self.current_iter - 1)

    def _evaluate_if_due(self, iteration: int) -> None:
        """The epoch's evaluation after step ``iteration`` if one is due."""
        if iteration >= self._next_eval:
            self._next_eval += self.iter_per_epoch
            self.current_epoch += 1
            self._evaluation = _Evaluation(iteration)
            self._finish_evaluation()

    def _finish_evaluation(self) -> None:
        """Make the evaluation under way: the losses read, the accuracies, the report.

        Each part is kept as soon as it is measured, so an evaluation that an exception
        (Ctrl-C) cut short is finished by the next :meth:`train` or :meth:`train_step`
        without measuring any part twice or losing the losses read.
        """
        ev = cast(_Evaluation, self._evaluation)  # every caller has set it
        if ev.mean_loss is None:
            self.backend.synchronize(*self._losses, *self.network.params.values())
            ev.start = time.perf_counter()  # from when the device finished the steps
            ev.mean_loss = self._flush_losses()
        n = self.evaluate_sample_num_per_epoch  # the first n of each set, or all of it
        data = (self.x_train, self.t_train, self.x_test, self.t_test)
        # No slice when all of a set is measured: JAX would copy it at every evaluation.
        x, t, xt, tt = (a if n is None or n >= a.shape[0] else a[:n, ...] for a in data)
        if ev.final:
            xt, tt = self.x_test, self.t_test  # all the test data
        if ev.train_acc is None and (self.report is not None or not ev.final):
            ev.train_acc = self._accuracy(x, t)
        if ev.test_acc is None:
            ev.test_acc = self._accuracy(xt, tt)
        if ev.final:
            self.test_acc = ev.test_acc
        elif not ev.recorded:
            self.train_acc_list.append(cast(float, ev.train_acc))  # measured: not final
            self.test_acc_list.append(ev.test_acc)
            ev.recorded = True
        report = self.report or _Evaluation.book_line  # the report may stop: still under way
        line = report(ev.result(self.current_epoch))
        self._evaluation = None
        self._bar.say(line)
        self._bar.resume(ev)

    def _flush_losses(self) -> float:
        """Read the pending losses from the device (one read); their mean, or NaN if none."""
        if not self._losses:
            return math.nan
        xp = self._xp
        flat = [xp.reshape(xp.asarray(v), (-1,)) for v in self._losses]  # 0-d, or (k,)
        losses: list[float] = self.backend.to_numpy(xp.concat(flat)).tolist()
        if self.dp is not None:  # each rank's loss is on its slice: the mean is the batch's
            losses = self.dp.average(losses)
        start = len(self.train_loss_list)
        self._losses = []  # read: kept in the list from here on
        self.train_loss_list.extend(losses)
        bad = next((i for i, v in enumerate(losses) if not math.isfinite(v)), None)
        if bad is not None:
            raise FloatingPointError(
                f"the training loss became {losses[bad]} at step {start + bad} "
                f"({self.optimizer!r}); training diverged: lower the learning rate"
            )
        return sum(losses) / len(losses)

    def _accuracy(self, x: Array, t: Array) -> float:
        """The network's accuracy (data parallel: each rank scores a slice of ``x``)."""
        acc: float = (self.network if self.dp is None else self.step).accuracy(x, t)
        return acc

    def _progress_bar(self) -> Any:
        """A tqdm bar of the steps on a terminal (``None`` elsewhere, or without tqdm)."""
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


class _Progress:
    """What a :class:`Trainer` shows: its lines, through the tqdm bar on a terminal.

    The bar's clock counts the steps only: it is paused in the evaluations (their time is
    not the steps'), and a bar that waits for the first evaluation starts after it.
    """

    def __init__(self, trainer: Trainer) -> None:
        self.trainer, self.bar, self.waits = trainer, None, False

    def start(self, waits: bool) -> None:
        self.waits = waits
        self.bar = None if waits else self.trainer._progress_bar()

    def update(self, steps: int) -> None:
        if self.bar is not None:
            self.bar.update(steps)

    def say(self, line: str | None) -> None:
        """Print ``line`` when verbose; ``None``: nothing."""
        if self.trainer.verbose and line is not None:
            (self.bar.write if self.bar is not None else print)(line)

    def resume(self, ev: _Evaluation) -> None:
        """After an evaluation: the bar (started now if it waited) goes on, clock resumed."""
        if self.bar is None and self.waits and not ev.final:
            self.waits, self.bar = False, self.trainer._progress_bar()
        if self.bar is not None:
            self.bar.unpause()
            if not ev.final:
                self.bar.set_postfix(
                    train_acc=f"{ev.train_acc:.4f}", test_acc=f"{ev.test_acc:.4f}"
                )

    def close(self) -> None:
        self.waits = False
        if self.bar is not None:
            self.bar.close()
            self.bar = None


class _Evaluation:
    """An evaluation under way: what has been measured so far (``None``: not yet)."""

    def __init__(self, iteration: int, *, final: bool = False) -> None:
        self.iteration, self.final, self.start = iteration, final, time.perf_counter()
        self.mean_loss: float | None = None
        self.train_acc: float | None = None
        self.test_acc: float | None = None
        self.recorded = False  # appended to train_acc_list and test_acc_list

    @staticmethod
    def book_line(ev: Evaluation) -> str:
        """The book's line for an evaluation (the final one: two lines)."""
        if ev.final:
            return (
                f"=============== Final Test Accuracy ===============\ntest acc:{ev.test_acc:.4f}"
            )
        return (
            f"=== epoch:{ev.epoch}, train loss:{ev.train_loss:.4f}, "
            f"train acc:{ev.train_acc:.4f}, test acc:{ev.test_acc:.4f} ==="
        )

    def result(self, epoch: int) -> Evaluation:
        """What ``report`` receives."""
        seconds = time.perf_counter() - self.start
        # Measured by now (cast: from float | None), but for the final train_acc without a
        # report, which stays None: the book's final line does not show it.
        loss, train, test = cast(
            "tuple[float, float, float]", (self.mean_loss, self.train_acc, self.test_acc)
        )
        return Evaluation(epoch, self.iteration, loss, train, test, seconds, self.final)


def _check_batch_norm_batch(network: Any, local: int, global_batch: int) -> None:
    """Raise ``ValueError`` when a BatchNorm layer would train on batches of one sample.

    Caught here, before anything runs, rather than at the first step (where the layer
    itself raises): the variance of one sample is 0, so BatchNorm would output ``beta``.
    """
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
