"""Portable checkpoints: a network's parameters in a safetensors file, never a pickle.

``net.save_params(path)`` and ``net.load_params(path)`` (the book's names from ch. 7-8,
where they pickle) are provided by :class:`Checkpointable`, which the networks inherit.

The file holds every array inference needs — ``params`` and, with BatchNorm, the running
statistics (``running_mean1``, ``running_var1``, ...) — as host arrays, so a checkpoint
saved on any backend and device loads on any other.  Optionally the optimizer's state is
stored too (``optimizer/<slot>/<key>`` arrays), so that training resumes exactly.  The
safetensors metadata (strings only) holds JSON: the format, the xprop version, the network
class, its configuration, the dtype, the backend and device it was saved from, and a
SHA-256 digest of all arrays.

Saving is atomic: the file is written to a temporary file in the same folder, flushed to
disk, then renamed over the target, so an interrupted save never leaves a half-written
checkpoint (the old one, if any, stays intact).  Loading checks everything — readable file,
format, class, configuration, digest, the set of keys, every shape and dtype — before it
changes anything; any mismatch raises ``ValueError`` naming the key and both values, and
leaves the network (and optimizer) untouched.

Like :mod:`xprop.datasets`, this module works on the host and imports NumPy.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from xprop._namespace import dtype_name
from xprop._version import __version__
from xprop.files import write_atomically

__all__ = ["CheckpointError", "Checkpointable", "load_params", "read_metadata", "save_params"]

FORMAT = "xprop.checkpoint"
FORMAT_VERSION = 1
OPTIMIZER_PREFIX = "optimizer/"


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded into this network: the message says why."""


class Checkpointable:
    """Mixin giving a network ``save_params`` and ``load_params``.

    The network needs ``params`` (dict of arrays) and ``backend`` (:class:`xprop.Backend`).
    It may override the hooks: ``_checkpoint_config()`` (settings that must match on load;
    default: the layer sizes read off the weight shapes), ``_checkpoint_info()`` (settings
    recorded but not checked, e.g. weight decay), ``_checkpoint_buffers()`` and
    ``_load_checkpoint_buffers(buffers)`` (arrays inference needs besides ``params``,
    e.g. BatchNorm's running statistics).
    """

    def save_params(self, path: str | os.PathLike[str], *, optimizer: Any = None) -> None:
        """Write the network (and, if given, ``optimizer``'s state) to ``path`` atomically.

        See :func:`save_params`.
        """
        save_params(self, path, optimizer=optimizer)

    def load_params(self, path: str | os.PathLike[str], *, optimizer: Any = None) -> None:
        """Load a checkpoint written by :meth:`save_params` (validated before any change).

        See :func:`load_params`.
        """
        load_params(self, path, optimizer=optimizer)

    def _checkpoint_config(self) -> dict[str, Any]:
        params: Mapping[str, Any] = self.params  # type: ignore[attr-defined]
        sizes, idx = [], 1
        while f"W{idx}" in params:
            shape = tuple(params[f"W{idx}"].shape)
            sizes = sizes or [int(shape[0])]
            sizes.append(int(shape[1]))
            idx += 1
        return {"sizes": sizes}

    def _checkpoint_info(self) -> dict[str, Any]:
        return {}

    def _checkpoint_buffers(self) -> dict[str, Any]:
        return {}

    def _load_checkpoint_buffers(self, buffers: dict[str, Any]) -> None:
        if buffers:
            raise CheckpointError(f"{type(self).__name__} has no buffers to load")


def save_params(net: Any, path: str | os.PathLike[str], *, optimizer: Any = None) -> None:
    """Save ``net``'s parameters and buffers (and ``optimizer``'s state) to ``path``.

    Parameters
    ----------
    net : Checkpointable
        A network (:class:`~xprop.TwoLayerNet`, :class:`~xprop.MultiLayerNet`, ...).
    path : str or path
        The file to write (``.safetensors`` by convention); its folder must exist.  An
        existing file is replaced atomically.
    optimizer : Optimizer, optional
        Also store its hyperparameters, update count and state arrays.

    Raises
    ------
    FileNotFoundError
        The folder does not exist.
    """
    from safetensors.numpy import save

    path = Path(path)
    if not path.parent.is_dir():
        raise FileNotFoundError(
            f"cannot save a checkpoint to {path}: folder {path.parent} does not exist; "
            "create it first"
        )
    backend = net.backend
    tensors = {key: _host(backend, value) for key, value in _net_arrays(net).items()}
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
    if optimizer is not None:
        state = optimizer.state_dict()
        for slot, arrays in state["slots"].items():
            for key, value in arrays.items():
                tensors[f"{OPTIMIZER_PREFIX}{slot}/{key}"] = _host(backend, value)
        meta["optimizer"] = json.dumps(
            {"class": state["class"], "hyper": state["hyper"], "iter": state["iter"]}
        )
    meta["sha256"] = _digest(tensors)
    _atomic_write(path, save(tensors, metadata=meta))


def read_metadata(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The metadata of a checkpoint, JSON fields decoded (to see what network to build).

    Raises :class:`CheckpointError` when the file is not a readable xprop checkpoint.
    """
    meta, _ = _read(Path(path))
    return _decode(Path(path), meta)


def load_params(net: Any, path: str | os.PathLike[str], *, optimizer: Any = None) -> None:
    """Load a checkpoint into ``net`` (and ``optimizer``), checking everything first.

    The arrays are copied to ``net``'s backend and device; ``params`` entries are rebound
    (layers read them live).  Without ``optimizer``, optimizer state in the file is ignored.

    Raises
    ------
    FileNotFoundError
        No file at ``path``.
    CheckpointError (a ValueError)
        A corrupt or foreign file, a wrong network class or configuration, a missing or
        extra key, a shape or dtype mismatch, or no optimizer state in the file when
        ``optimizer`` is given.  The network and optimizer are left untouched.
    """
    path = Path(path)
    meta, tensors = _read(path)
    info = _decode(path, meta)
    if _digest(tensors) != meta.get("sha256"):
        raise CheckpointError(
            f"checkpoint {path} is corrupt: its arrays do not match the SHA-256 digest "
            "stored when it was saved; save it again"
        )
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
                f"{name}; build the network with the checkpoint's settings {info['config']}"
            )

    current = _net_arrays(net)
    saved_net = {k: v for k, v in tensors.items() if not k.startswith(OPTIMIZER_PREFIX)}
    _check_keys(path, "network", set(current), set(saved_net))
    backend = net.backend
    for key, value in current.items():
        _check_array(path, key, saved_net[key], tuple(value.shape), _dtype_of(backend, value))

    opt_state = None
    if optimizer is not None:
        opt_state = _optimizer_state(path, info, tensors, net, optimizer)

    # Everything checked: copy to the device (a failure here still changes nothing) ...
    moved = {k: backend.asarray(np.array(v), dtype=str(v.dtype)) for k, v in saved_net.items()}
    if opt_state is not None:
        opt_state["slots"] = {
            slot: {k: backend.asarray(np.array(v), dtype=str(v.dtype)) for k, v in arrays.items()}
            for slot, arrays in opt_state["slots"].items()
        }
    # ... then change the network (and optimizer) in one go.
    buffers = net._checkpoint_buffers()
    for key in net.params:
        net.params[key] = moved[key]
    net._load_checkpoint_buffers({key: moved[key] for key in buffers})
    if optimizer is not None:
        optimizer.load_state_dict(opt_state)


# -- helpers --------------------------------------------------------------------------------


def _net_arrays(net: Any) -> dict[str, Any]:
    arrays = dict(net.params)
    buffers = net._checkpoint_buffers()
    clash = set(arrays) & set(buffers)
    if clash:  # a programming error in a network class, not a user error
        raise RuntimeError(f"buffer names {sorted(clash)} clash with parameter names")
    arrays.update(buffers)
    return arrays


def _host(backend: Any, x: Any) -> np.ndarray:
    return np.ascontiguousarray(backend.to_numpy(x))


def _dtype_of(backend: Any, x: Any) -> str:
    return dtype_name(backend.xp, x.dtype)


def _version() -> str:
    return __version__


def _digest(tensors: Mapping[str, np.ndarray]) -> str:
    """SHA-256 over every array's name, dtype, shape and bytes, in key order."""
    h = hashlib.sha256()
    for key in sorted(tensors):
        a = tensors[key]
        h.update(json.dumps([key, a.dtype.str, list(a.shape)]).encode())
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


def _atomic_write(path: Path, data: bytes) -> None:
    write_atomically(path, lambda tmp: tmp.write_bytes(data))


def _read(path: Path) -> tuple[dict[str, str], dict[str, np.ndarray]]:
    from safetensors import safe_open

    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}: the file does not exist")
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


def _decode(path: Path, meta: dict[str, str]) -> dict[str, Any]:
    if meta.get("format") != FORMAT:
        raise CheckpointError(
            f"{path} is a safetensors file but not an xprop checkpoint (no format "
            f"{FORMAT!r} in its metadata); write checkpoints with net.save_params"
        )
    if meta.get("format_version") != str(FORMAT_VERSION):
        raise CheckpointError(
            f"checkpoint {path} has format version {meta.get('format_version')!r}; this "
            f"xprop ({_version()}) reads version {FORMAT_VERSION}: upgrade xprop"
        )
    out: dict[str, Any] = dict(meta)
    try:
        for key in ("config", "info", "optimizer"):
            if key in meta:
                out[key] = json.loads(meta[key])
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"checkpoint {path} is corrupt: bad metadata ({exc})") from exc
    for key in ("class", "config", "sha256"):
        if key not in out:
            raise CheckpointError(f"checkpoint {path} is corrupt: metadata lacks {key!r}")
    return out


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
    from xprop.optimizers import Optimizer

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
    for slot, arrays in slots.items():
        _check_keys(path, f"optimizer {slot!r}", set(net.params), set(arrays))
        for key, value in net.params.items():
            shape, dtype = tuple(value.shape), _dtype_of(backend, value)
            _check_array(path, f"{OPTIMIZER_PREFIX}{slot}/{key}", arrays[key], shape, dtype)
    return state
