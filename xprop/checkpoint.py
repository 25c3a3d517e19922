"""Portable checkpoints: a network's parameters in a safetensors file, never a pickle.

``net.save_params(path)`` and ``net.load_params(path)`` (the book's names from ch. 7-8,
where they pickle) are provided by :class:`Checkpointable`, which the networks inherit.

The file holds every array inference needs — ``params`` and, with BatchNorm, the running
statistics (``running_mean1``, ``running_var1``, ...) — as host arrays, so a checkpoint
saved on any backend and device loads on any other.  Optionally the optimizer's state is
stored too (``optimizer/<slot>/<key>`` arrays), so that training resumes exactly.  The
safetensors metadata (strings only) holds JSON: the format, the xprop version, the network
class, its configuration, the dtype, the backend and device it was saved from, the state
of the network's host generator (which draws the Dropout masks), and a SHA-256 digest of
all arrays and all other metadata (format 2; format 1, whose digest covered the arrays
only, still loads).

Saving is atomic: the file is written to a temporary file in the same folder, flushed to
disk, then renamed over the target, so an interrupted save never leaves a half-written
checkpoint (the old one, if any, stays intact).  Loading checks everything — readable file,
format, digest, class, configuration, the set of keys, every shape and dtype — before it
changes anything; any mismatch raises :class:`CheckpointError` (a ``ValueError``) naming
the key and both values, and leaves the network (and optimizer) untouched.

Like :mod:`xprop.datasets`, this module works on the host and imports NumPy.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from xprop._namespace import dtype_name
from xprop._version import __version__
from xprop.files import check_target, write_atomically
from xprop.optimizers import MASTER, Optimizer, state_dtype
from xprop.typing import Array

__all__ = ["CheckpointError", "Checkpointable", "load_params", "read_metadata", "save_params"]

FORMAT = "xprop.checkpoint"
FORMAT_VERSION = 2
#: Versions this xprop reads: 1 (digest over the arrays only) and 2 (arrays and metadata).
READ_VERSIONS = (1, 2)
OPTIMIZER_PREFIX = "optimizer/"


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded into this network: the message says why."""


class Checkpointable:
    """Mixin giving a network ``save_params`` and ``load_params``.

    The network needs ``params`` (dict of arrays) and ``backend`` (:class:`xprop.Backend`).
    It may override the hooks: ``_checkpoint_config()`` (settings that must match on load;
    default: the layer sizes read off the weight shapes), ``_checkpoint_info()`` (settings
    recorded but not checked, e.g. weight decay), ``running_stats()`` and
    ``set_running_stats(stats)`` (arrays inference needs besides ``params``, e.g.
    BatchNorm's running statistics: :class:`~xprop.nets.network.Network` has them).
    """

    params: dict[str, Array]  # set by the network (a declaration for type checkers)

    def save_params(
        self, path: str | os.PathLike[str], *, optimizer: Optimizer | None = None
    ) -> None:
        """Write the network (and, if given, ``optimizer``'s state) to ``path`` atomically.

        See :func:`save_params`.
        """
        save_params(self, path, optimizer=optimizer)

    def load_params(
        self, path: str | os.PathLike[str], *, optimizer: Optimizer | None = None
    ) -> None:
        """Load a checkpoint written by :meth:`save_params` (validated before any change).

        See :func:`load_params`.
        """
        load_params(self, path, optimizer=optimizer)

    def _checkpoint_config(self) -> dict[str, Any]:
        params: Mapping[str, Any] = self.params
        sizes: list[int] = []
        idx = 1
        while f"W{idx}" in params:
            shape = tuple(params[f"W{idx}"].shape)
            sizes = sizes or [int(shape[0])]
            sizes.append(int(shape[1]))
            idx += 1
        return {"sizes": sizes}

    def _checkpoint_info(self) -> dict[str, Any]:
        return {}

    def running_stats(self) -> dict[str, Array]:
        """Arrays inference needs besides ``params`` (none here)."""
        return {}

    def set_running_stats(self, stats: dict[str, Array]) -> None:
        """Set what :meth:`running_stats` returns (nothing here)."""
        if stats:
            raise CheckpointError(f"{type(self).__name__} has no running statistics to load")


def save_params(
    net: Any, path: str | os.PathLike[str], *, optimizer: Optimizer | None = None
) -> None:
    """Save ``net``'s parameters and buffers (and ``optimizer``'s state) to ``path``.

    Parameters
    ----------
    net : Checkpointable
        A network (:class:`~xprop.TwoLayerNet`, :class:`~xprop.MultiLayerNet`, ...).
    path : str or path
        The file to write (``.safetensors`` by convention); its folder must exist.  An
        existing file is replaced atomically and keeps its permissions; a symbolic link is
        followed (its target is replaced, the link stays).
    optimizer : Optimizer, optional
        Also store its hyperparameters, update count and state arrays; they must be the
        state of this network's parameters (the same keys, shapes and dtypes).

    Raises
    ------
    FileNotFoundError
        The folder does not exist.
    IsADirectoryError
        ``path`` is a folder.
    ValueError
        ``path`` is empty or names something other than a regular file (a FIFO, a
        device); or ``optimizer`` holds the state of other parameters.
    TypeError
        ``optimizer`` is not an xprop optimizer.
    """
    from safetensors.numpy import save

    path = check_target(path, what="a checkpoint")
    if not path.parent.is_dir():
        what = "is a file, not a folder" if path.parent.exists() else "does not exist"
        raise FileNotFoundError(
            f"cannot save a checkpoint to {path}: folder {path.parent} {what}; "
            + ("name a file in a folder" if path.parent.exists() else "create it first")
        )
    arrays = _net_arrays(net)  # first: a network that never called super().__init__ says so
    missing = sorted(key for key, value in arrays.items() if value is None)
    if missing:
        raise CheckpointError(
            f"cannot save {type(net).__name__}: its running statistics {missing} do not exist "
            "yet (a BatchNormalization built without running_mean and running_var makes them "
            "on its first forward pass); run net.predict(x) once before saving, or build the "
            "layer with running statistics (zeros of its feature count)"
        )
    backend = net.backend
    tensors = {key: _host(backend, value) for key, value in arrays.items()}
    meta = {
        "format": FORMAT,
        "format_version": str(FORMAT_VERSION),
        "xprop_version": _version(),
        "class": type(net).__name__,
        "config": json.dumps(net._checkpoint_config(), sort_keys=True),
        "info": json.dumps(net._checkpoint_info(), sort_keys=True),
        "dtype": backend.dtype_name,
        "backend": backend.name,
        "device": str(backend.device),
    }
    rng = _generator(net)
    if rng is not None:
        meta["rng"] = json.dumps(rng.bit_generator.state, sort_keys=True)
    if optimizer is not None:
        state = _optimizer_to_save(net, optimizer)
        for slot, arrays in state["slots"].items():
            for key, value in arrays.items():
                tensors[f"{OPTIMIZER_PREFIX}{slot}/{key}"] = _host(backend, value)
        meta["optimizer"] = json.dumps(
            {"class": state["class"], "hyper": state["hyper"], "iter": state["iter"]}
        )
    meta["sha256"] = _digest(tensors, meta)
    _atomic_write(path, save(tensors, metadata=meta))


def read_metadata(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The metadata of a checkpoint, JSON fields decoded (to see what network to build).

    Raises :class:`CheckpointError` when the file is not a readable xprop checkpoint, or
    its digest does not match (the metadata are checked as on load).
    """
    meta, tensors = _read(Path(path))
    return _decode(Path(path), meta, tensors)


def load_params(
    net: Any, path: str | os.PathLike[str], *, optimizer: Optimizer | None = None
) -> None:
    """Load a checkpoint into ``net`` (and ``optimizer``), checking everything first.

    The arrays are copied to ``net``'s backend and device; ``params`` entries are rebound
    (layers read them live).  Without ``optimizer``, optimizer state in the file is ignored.

    The state of the network's host generator (``net.rng``, which draws the Dropout masks)
    is restored too when the file holds it, so that training resumes with the masks the
    uninterrupted run would draw.

    Raises
    ------
    FileNotFoundError
        No file at ``path``.
    IsADirectoryError
        ``path`` is a folder.
    CheckpointError (a ValueError)
        A corrupt or foreign file, a wrong network class or configuration, a missing or
        extra key, a shape or dtype mismatch, or no optimizer state in the file when
        ``optimizer`` is given.  The network and optimizer are left untouched.
    """
    path = Path(path)
    meta, tensors = _read(path)
    info = _decode(path, meta, tensors)
    name = type(net).__name__
    if info["class"] != name:
        raise CheckpointError(
            f"checkpoint {path} holds a {info['class']}, not a {name}; load it into a "
            f"{info['class']} built with {info['config']}"
        )
    config = json.loads(json.dumps(net._checkpoint_config(), sort_keys=True))
    for key in sorted(set(config) | set(info["config"])):
        saved, ours = info["config"].get(key), config.get(key)
        if saved != ours:
            raise CheckpointError(
                f"checkpoint {path}: {key} is {saved!r} in the file but {ours!r} in this "
                f"{name}; " + _config_fix(net, info["config"])
            )

    current = _net_arrays(net)
    saved_net = {k: v for k, v in tensors.items() if not k.startswith(OPTIMIZER_PREFIX)}
    _check_keys(path, "network", set(current), set(saved_net))
    backend = net.backend
    for key, value in current.items():
        if value is None:  # a statistic the layer has not made yet: the file's is taken
            continue
        _check_array(path, key, saved_net[key], tuple(value.shape), _dtype_of(backend, value))

    opt_state = None
    if optimizer is not None:
        opt_state = _optimizer_state(path, info, tensors, net, optimizer)
    generator = _generator(net)
    rng_state = None
    if generator is not None and "rng" in info:
        ours = type(generator.bit_generator).__name__
        if ours != info["rng"]["bit_generator"]:
            raise CheckpointError(
                f"checkpoint {path}: the generator state is for "
                f"{info['rng']['bit_generator']}, but this {name}'s generator is {ours}; "
                "build the network with backend.rng (numpy.random.default_rng)"
            )
        rng_state = info["rng"]

    # Everything checked: copy to the device (a failure here still changes nothing) ...
    moved = {k: backend.asarray(np.array(v), dtype=str(v.dtype)) for k, v in saved_net.items()}
    if opt_state is not None:
        opt_state["slots"] = {
            slot: {k: backend.asarray(np.array(v), dtype=str(v.dtype)) for k, v in arrays.items()}
            for slot, arrays in opt_state["slots"].items()
        }
    # ... then change the network (and optimizer) in one go.
    buffers = net.running_stats()
    for key in net.params:
        net.params[key] = moved[key]
    net.set_running_stats({key: moved[key] for key in buffers})
    if optimizer is not None and opt_state is not None:  # opt_state with an optimizer
        optimizer.load_state_dict(opt_state)
    if generator is not None and rng_state is not None:  # rng_state implies a generator
        generator.bit_generator.state = rng_state


# -- helpers --------------------------------------------------------------------------------


def _net_arrays(net: Any) -> dict[str, Array]:
    arrays = dict(net.params)
    buffers = net.running_stats()
    clash = set(arrays) & set(buffers)
    if clash:  # a programming error in a network class, not a user error
        raise RuntimeError(f"buffer names {sorted(clash)} clash with parameter names")
    arrays.update(buffers)
    return arrays


def _host(backend: Any, x: Array) -> np.ndarray:
    return np.ascontiguousarray(backend.to_numpy(x))


def _dtype_of(backend: Any, x: Array) -> str:
    return dtype_name(backend.xp, x.dtype)


def _version() -> str:
    return __version__


def _digest(tensors: Mapping[str, np.ndarray], meta: Mapping[str, str] | None = None) -> str:
    """SHA-256 over the metadata (every entry but the digest itself; format 2), then every
    array's name, dtype, shape and bytes, in key order.  ``meta=None``: format 1's digest
    (the arrays only)."""
    h = hashlib.sha256()
    if meta is not None:
        entries = sorted((k, v) for k, v in meta.items() if k != "sha256")
        h.update(json.dumps(entries).encode())
    for key in sorted(tensors):
        a = tensors[key]
        h.update(json.dumps([key, a.dtype.str, list(a.shape)]).encode())
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


def _atomic_write(path: Path, data: bytes) -> None:
    write_atomically(path, lambda tmp: tmp.write_bytes(data))


def _read(path: Path) -> tuple[dict[str, str], dict[str, np.ndarray]]:
    from safetensors import safe_open

    try:
        mode = path.stat().st_mode  # follows symbolic links
    except FileNotFoundError:
        raise FileNotFoundError(f"no checkpoint at {path}: the file does not exist") from None
    if stat.S_ISDIR(mode):
        raise IsADirectoryError(
            f"{path} is a folder, not a checkpoint file; give the path of the .safetensors "
            "file written by net.save_params"
        )
    if not stat.S_ISREG(mode):
        raise CheckpointError(
            f"{path} is not a regular file ({_kind(mode)}); give the path of the "
            ".safetensors file written by net.save_params"
        )
    try:
        with safe_open(str(path), framework="numpy") as f:
            meta = dict(f.metadata() or {})
            tensors = {key: f.get_tensor(key) for key in f.keys()}  # noqa: SIM118
    except Exception as exc:  # safetensors raises its own error type for a bad file
        raise CheckpointError(
            f"checkpoint {path} is corrupt or not a safetensors file "
            f"({type(exc).__name__}: {exc}); save it again"
        ) from exc
    return meta, tensors


def _decode(path: Path, meta: dict[str, str], tensors: Mapping[str, np.ndarray]) -> dict[str, Any]:
    """The metadata, checked against the digest and with its JSON fields decoded and typed."""
    if meta.get("format") != FORMAT:
        raise CheckpointError(
            f"{path} is a safetensors file but not an xprop checkpoint (no format "
            f"{FORMAT!r} in its metadata); write checkpoints with net.save_params"
        )
    version = meta.get("format_version")
    if version not in {str(v) for v in READ_VERSIONS}:
        raise CheckpointError(
            f"checkpoint {path} has format version {version!r}; this xprop ({_version()}) "
            f"reads versions {', '.join(map(str, READ_VERSIONS))}: upgrade xprop"
        )
    if "sha256" not in meta:
        raise CheckpointError(f"checkpoint {path} is corrupt: metadata lacks 'sha256'")
    covered = meta if version != "1" else None  # format 1: the digest covers the arrays only
    if _digest(tensors, covered) != meta["sha256"]:
        what = "arrays and metadata" if covered is not None else "arrays"
        raise CheckpointError(
            f"checkpoint {path} is corrupt: its {what} do not match the SHA-256 digest "
            "stored when it was saved; save it again"
        )
    out: dict[str, Any] = dict(meta)
    for key in ("config", "info", "optimizer", "rng"):
        if key in meta:
            out[key] = _json_object(path, key, meta[key])
    for key in ("class", "config"):
        if key not in out:
            raise CheckpointError(f"checkpoint {path} is corrupt: metadata lacks {key!r}")
    if "optimizer" in out:
        opt = out["optimizer"]
        if not isinstance(opt.get("class"), str):
            raise CheckpointError(
                f"checkpoint {path}: optimizer 'class' must be a string, got {opt.get('class')!r}"
            )
        if not isinstance(opt.get("hyper"), dict):
            raise CheckpointError(
                f"checkpoint {path}: optimizer 'hyper' must be a JSON object, got "
                f"{_json_type(opt.get('hyper'))}"
            )
        iteration = opt.get("iter")
        if isinstance(iteration, bool) or not isinstance(iteration, int):
            raise CheckpointError(
                f"checkpoint {path}: optimizer 'iter' must be an integer, got {iteration!r}"
            )
    if "rng" in out:
        _check_rng(path, out["rng"])
    return out


def _json_object(path: Path, key: str, text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CheckpointError(
            f"checkpoint {path} is corrupt: metadata {key!r} is not valid JSON ({exc})"
        ) from exc
    except RecursionError:
        raise CheckpointError(
            f"checkpoint {path}: metadata {key!r} is nested too deeply to read; it was not "
            "written by net.save_params"
        ) from None
    if not isinstance(value, dict):
        raise CheckpointError(
            f"checkpoint {path}: metadata {key!r} must be a JSON object, got "
            f"{_json_type(value)} {_short(value)}; it was not written by net.save_params"
        )
    return value


def _json_type(value: Any) -> str:
    return type(value).__name__


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _kind(mode: int) -> str:
    from xprop.files import file_kind

    return file_kind(mode)


def _check_keys(path: Path, what: str, expected: set[str], found: set[str]) -> None:
    missing, extra = sorted(expected - found), sorted(found - expected)
    if missing:
        raise CheckpointError(
            f"checkpoint {path} lacks {what} key {missing[0]!r} (missing: {missing}); the "
            f"network has {sorted(expected)}, the file {sorted(found)}"
        )
    if extra:
        raise CheckpointError(
            f"checkpoint {path} has extra {what} key {extra[0]!r} (extra: {extra}); the "
            f"network has {sorted(expected)}, the file {sorted(found)}"
        )


def _check_array(
    path: Path, key: str, saved: np.ndarray, shape: tuple[int, ...], dtype: str
) -> None:
    if tuple(saved.shape) != shape:
        raise CheckpointError(
            f"checkpoint {path}: {key!r} has shape {tuple(saved.shape)} in the file but "
            f"{shape} in the network; build the network with the sizes it was saved with"
        )
    if saved.dtype.name != dtype:
        raise CheckpointError(
            f"checkpoint {path}: {key!r} has dtype {saved.dtype.name} in the file but "
            f"{dtype} in the network; build the network with dtype {saved.dtype.name} "
            f"(e.g. backend=xprop.get_backend(name, dtype={saved.dtype.name!r}))"
        )


def _optimizer_state(
    path: Path, info: dict[str, Any], tensors: dict[str, np.ndarray], net: Any, optimizer: Any
) -> dict[str, Any]:
    if not isinstance(optimizer, Optimizer):
        raise TypeError(
            f"optimizer must be an xprop optimizer (xprop.optimizers.Optimizer), got "
            f"{type(optimizer).__name__}"
        )
    saved = info.get("optimizer")
    name = type(optimizer).__name__
    if saved is None:
        raise CheckpointError(
            f"checkpoint {path} holds no optimizer state; save with "
            "net.save_params(path, optimizer=opt) to resume training, or load without "
            "optimizer="
        )
    if saved.get("class") != name:
        raise CheckpointError(
            f"checkpoint {path} holds {saved.get('class')} state, not {name}; load it into "
            f"a {saved.get('class')} optimizer"
        )
    slots: dict[str, dict[str, np.ndarray]] = {}
    for key, value in tensors.items():
        if key.startswith(OPTIMIZER_PREFIX):
            slot, _, param = key[len(OPTIMIZER_PREFIX) :].partition("/")
            slots.setdefault(slot, {})[param] = value
    state = {**saved, "slots": slots}
    try:
        optimizer.check_state_dict(state)
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"checkpoint {path}: bad optimizer state ({exc})") from exc
    backend = net.backend
    halves = {key for key, value in net.params.items() if _dtype_of(backend, value) == "float16"}
    for slot, arrays in slots.items():
        keys = halves if slot == MASTER else set(net.params)  # masters: of float16 ones
        _check_keys(path, f"optimizer {slot!r}", keys, set(arrays))
        for key in keys:
            value = net.params[key]
            shape, dtype = tuple(value.shape), state_dtype(_dtype_of(backend, value))
            _check_array(path, f"{OPTIMIZER_PREFIX}{slot}/{key}", arrays[key], shape, dtype)
    return state


def _config_fix(net: Any, config: dict[str, Any]) -> str:
    """How to build a network the checkpoint's configuration fits."""
    if type(net)._checkpoint_config is not Checkpointable._checkpoint_config:
        return f"build the network with the checkpoint's settings {config}"
    # The default configuration: layer sizes read off the weights W1, W2, ..., which the
    # class may take under any names.
    return (
        f"build the network so that its weights W1, W2, ... have the sizes {config.get('sizes')} "
        "(input, then each layer's units) the checkpoint's have"
    )


def _optimizer_to_save(net: Any, optimizer: Any) -> dict[str, Any]:
    """``optimizer.state_dict()``, checked to be the state of ``net``'s parameters."""
    if not isinstance(optimizer, Optimizer):
        raise TypeError(
            f"optimizer must be an xprop optimizer (xprop.optimizers.Optimizer), got "
            f"{type(optimizer).__name__}"
        )
    state = optimizer.state_dict()
    backend, params = net.backend, net.params
    fix = "pass the optimizer that trains this network (or save without optimizer=)"
    halves = {key for key, value in params.items() if _dtype_of(backend, value) == "float16"}
    for slot, arrays in state["slots"].items():
        if set(arrays) != (halves if slot == MASTER else set(params)):
            raise ValueError(
                f"cannot save {type(optimizer).__name__} with this {type(net).__name__}: "
                f"the optimizer's {slot!r} state has keys {sorted(arrays)} but the network "
                f"has {sorted(params)}; {fix}"
            )
        for key, value in params.items():
            if key not in arrays:  # a parameter without a master copy
                continue
            ours, theirs = tuple(value.shape), tuple(arrays[key].shape)
            if ours != theirs:
                raise ValueError(
                    f"cannot save {type(optimizer).__name__} with this {type(net).__name__}: "
                    f"the optimizer's {slot!r} state for {key!r} has shape {theirs} but the "
                    f"parameter has {ours}; {fix}"
                )
            ours_dt = state_dtype(_dtype_of(backend, value))
            theirs_dt = _dtype_of(backend, arrays[key])
            if ours_dt != theirs_dt:
                raise ValueError(
                    f"cannot save {type(optimizer).__name__} with this {type(net).__name__}: "
                    f"the optimizer's {slot!r} state for {key!r} has dtype {theirs_dt} but "
                    f"the parameter has {ours_dt}; {fix}"
                )
    return state


def _generator(net: Any) -> np.random.Generator | None:
    """The network's host generator (``net.rng.generator``, drawing the Dropout masks)."""
    generator = getattr(getattr(net, "rng", None), "generator", None)
    return generator if isinstance(generator, np.random.Generator) else None


def _check_rng(path: Path, state: dict[str, Any]) -> None:
    """Check a saved generator state by setting it on a scratch bit generator."""
    name = state.get("bit_generator")
    if name != "PCG64":  # what numpy.random.default_rng, hence backend.rng, uses
        raise CheckpointError(
            f"checkpoint {path}: the generator state is for {name!r}, not PCG64, the "
            "generator of xprop's networks; it was not written by net.save_params"
        )
    try:
        scratch: np.random.BitGenerator = np.random.PCG64()  # its state takes any mapping
        scratch.state = state
    except (TypeError, ValueError, KeyError, OverflowError) as exc:
        raise CheckpointError(
            f"checkpoint {path}: bad generator state ({type(exc).__name__}: {exc})"
        ) from exc
