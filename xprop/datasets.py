"""MNIST for the book's examples: the four original IDX files, verified, on any backend.

The files are read from a folder (``data_dir=...``, else ``$XPROP_DATA_DIR``, else a per-user
cache folder), checked against their known SHA-256, parsed on the host with NumPy and copied
to the selected backend's device once.  Missing files are downloaded with ``pooch`` (an
optional dependency: ``pip install 'xprop[data]'``) into that folder.  Nothing is pickled.

This is the one compute-free module besides :mod:`xprop.backend` that imports NumPy: the
parsing happens on the host before the data reach any backend.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import os
import stat
import sys
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from xprop.backend import Backend, get_backend
from xprop.typing import Array

__all__ = ["DatasetError", "load_mnist"]

ENV_DATA_DIR = "XPROP_DATA_DIR"


class DatasetError(ValueError):
    """A data file that is missing, corrupt or malformed; the message says which and the fix."""


@dataclass(frozen=True)
class _IdxDataset:
    """Where a dataset of four gzipped IDX files comes from and what its files must hash to.

    ``files`` maps the roles ``train_images``, ``train_labels``, ``test_images`` and
    ``test_labels`` to file names; ``sha256`` maps each file name to its hex digest;
    ``mirrors`` are base URLs tried in order (file name appended); ``name`` is the cache
    subfolder and the name used in messages; ``sizes`` maps file names to their sizes in
    bytes, checked before hashing (a file missing there: not checked).
    """

    name: str
    files: Mapping[str, str]
    sha256: Mapping[str, str]
    mirrors: tuple[str, ...]
    num_classes: int = 10
    sizes: Mapping[str, int] = field(default_factory=dict)


_ROLES = ("train_images", "train_labels", "test_images", "test_labels")

MNIST = _IdxDataset(
    name="mnist",
    files={
        "train_images": "train-images-idx3-ubyte.gz",
        "train_labels": "train-labels-idx1-ubyte.gz",
        "test_images": "t10k-images-idx3-ubyte.gz",
        "test_labels": "t10k-labels-idx1-ubyte.gz",
    },
    sha256={
        "train-images-idx3-ubyte.gz": (
            "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609"
        ),
        "train-labels-idx1-ubyte.gz": (
            "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c"
        ),
        "t10k-images-idx3-ubyte.gz": (
            "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6"
        ),
        "t10k-labels-idx1-ubyte.gz": (
            "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6"
        ),
    },
    mirrors=(
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "https://storage.googleapis.com/cvdf-datasets/mnist/",
    ),
    sizes={
        "train-images-idx3-ubyte.gz": 9912422,
        "train-labels-idx1-ubyte.gz": 28881,
        "t10k-images-idx3-ubyte.gz": 1648877,
        "t10k-labels-idx1-ubyte.gz": 4542,
    },
)


def load_mnist(
    normalize: bool = True,
    flatten: bool = True,
    one_hot_label: bool = False,
    *,
    data_dir: str | os.PathLike[str] | None = None,
    backend: str | Backend | None = None,
    dtype: Any = None,
) -> tuple[tuple[Array, Array], tuple[Array, Array]]:
    """Load MNIST as ``((x_train, t_train), (x_test, t_test))`` arrays of one backend.

    ``N`` is 60000 for the training set and 10000 for the test set.

    Parameters
    ----------
    normalize : bool
        Images as floats in ``[0, 1]`` (pixel / 255) in the backend's floating dtype;
        otherwise the raw ``uint8`` pixels 0..255.
    flatten : bool
        Images of shape ``(N, 784)``; otherwise ``(N, 1, 28, 28)``.
    one_hot_label : bool
        Labels of shape ``(N, 10)`` in the floating dtype; otherwise ``(N,)`` integer class
        indices (int64, or int32 on JAX without 64-bit mode).
    data_dir : path, optional
        Folder holding the four ``.gz`` files; default ``$XPROP_DATA_DIR``, else a per-user
        cache folder (``~/.cache/xprop/mnist`` on Linux).  Missing files are downloaded there
        (a folder created for a download that fails is removed again).  An empty string,
        here or in ``$XPROP_DATA_DIR``, means not set.
    backend : str or Backend, optional
        Where the arrays live (see :func:`xprop.get_backend`); they are copied there once.
    dtype : str or dtype, optional
        Floating dtype of normalized images and one-hot labels (default: the backend's).

    Raises
    ------
    DatasetError
        A file is corrupt (its SHA-256 differs: the message names the file, both hashes and
        the fix), malformed, or missing and cannot be downloaded (the message says where to
        put the files and which variable to set).
    xprop.BackendError
        The backend or dtype cannot be used.
    """
    return _load_idx(
        MNIST,
        normalize=normalize,
        flatten=flatten,
        one_hot_label=one_hot_label,
        data_dir=data_dir,
        backend=backend,
        dtype=dtype,
    )


def _load_idx(
    spec: _IdxDataset,
    *,
    normalize: bool,
    flatten: bool,
    one_hot_label: bool,
    data_dir: str | os.PathLike[str] | None,
    backend: str | Backend | None,
    dtype: Any,
) -> tuple[tuple[Array, Array], tuple[Array, Array]]:
    """:func:`load_mnist` for any dataset of four IDX files (tests use tiny synthetic ones)."""
    be = get_backend(backend, dtype=dtype)
    folder, owned = _resolve_dir(spec, data_dir)
    source = _source(data_dir) if not owned else None
    paths = {role: _fetch(spec, role, folder, owned, source) for role in _ROLES}
    raw = {role: _read_idx(paths[role]) for role in _ROLES}

    out = []
    for split in ("train", "test"):
        images, labels = raw[f"{split}_images"], raw[f"{split}_labels"]
        image_file, label_file = paths[f"{split}_images"], paths[f"{split}_labels"]
        if images.ndim != 3 or labels.ndim != 1:
            raise DatasetError(
                f"{image_file.name} and {label_file.name} should hold images (N, rows, cols) "
                f"and labels (N,), but have shapes {images.shape} and {labels.shape}; "
                "check that the files are in the right roles"
            )
        if images.shape[0] != labels.shape[0]:
            raise DatasetError(
                f"{image_file.name} has {images.shape[0]} images but {label_file.name} has "
                f"{labels.shape[0]} labels; the two files belong to different sets"
            )
        if labels.size and int(labels.max()) >= spec.num_classes:
            raise DatasetError(
                f"{label_file.name} holds label {int(labels.max())}, but {spec.name} has "
                f"{spec.num_classes} classes; the file is not a {spec.name} label file"
            )
        x = _images_to(be, images, normalize, flatten)
        out.append((x, _labels_to(be, labels, spec, one_hot_label)))
    return out[0], out[1]


def _images_to(be: Backend, images: np.ndarray, normalize: bool, flatten: bool) -> Array:
    n, rows, cols = images.shape
    shape = (n, rows * cols) if flatten else (n, 1, rows, cols)
    # Scale on the host: every backend then receives bit-identical values.  The cached raw
    # array is read-only; both branches hand the backend a fresh copy it may own.
    host = images.astype(np.dtype(be.dtype_name)) / 255 if normalize else images.copy()
    return be.asarray(host.reshape(shape))


def _labels_to(be: Backend, labels: np.ndarray, spec: _IdxDataset, one_hot: bool) -> Array:
    if one_hot:
        hot = labels[:, None] == np.arange(spec.num_classes, dtype=labels.dtype)
        return be.asarray(hot.astype(np.dtype(be.dtype_name)))
    # int64 like the book; Backend.asarray narrows it where the library has no int64 (JAX).
    return be.asarray(labels.astype(np.int64))


# --------------------------------------------------------------------------------------
# Where the files are, and getting them there
# --------------------------------------------------------------------------------------


def _cache_root() -> Path:
    """The per-user cache folder of xprop (what ``platformdirs.user_cache_dir`` would say)."""
    home = Path.home()
    if sys.platform == "win32":
        base = Path(os.environ.get("LOCALAPPDATA") or home / "AppData" / "Local")
        return base / "xprop" / "xprop" / "Cache"
    if sys.platform == "darwin":
        return home / "Library" / "Caches" / "xprop"
    return Path(os.environ.get("XDG_CACHE_HOME") or home / ".cache") / "xprop"


def _resolve_dir(spec: _IdxDataset, data_dir: Any) -> tuple[Path, bool]:
    """The data folder and whether xprop owns it (may delete bad files there).

    An empty ``data_dir`` (``--data-dir ""``) means the same as an empty
    ``$XPROP_DATA_DIR``: not set, so the per-user cache folder; never the current folder.
    """
    if isinstance(data_dir, str) and not data_dir.strip():
        data_dir = None
    chosen = data_dir if data_dir is not None else os.environ.get(ENV_DATA_DIR, "").strip()
    if not chosen:
        return _cache_root() / spec.name, True
    folder = Path(chosen).expanduser()
    if folder.exists() and not folder.is_dir():
        source = "data_dir" if data_dir is not None else f"${ENV_DATA_DIR}"
        raise DatasetError(f"{source} = {str(folder)!r} is not a folder; point it at a folder")
    return folder, False


def _source(data_dir: Any) -> str:
    """Who chose the (user) data folder, for messages: ``data_dir`` or the variable."""
    if data_dir is not None and not (isinstance(data_dir, str) and not data_dir.strip()):
        return "data_dir"
    return ENV_DATA_DIR


def _fetch(spec: _IdxDataset, role: str, folder: Path, owned: bool, source: str | None) -> Path:
    """The verified local path of one file, downloading it first if it is missing.

    ``source``: ``"data_dir"`` or ``"XPROP_DATA_DIR"`` for a folder the user chose (named
    in the message when files are missing there), ``None`` for the cache folder.
    """
    name = spec.files[role]
    path = folder / name
    if not path.exists() and not path.is_symlink():
        _download(spec, name, folder, source)
    _verify(spec, path, owned)
    return path


def _download(spec: _IdxDataset, name: str, folder: Path, source: str | None = None) -> None:
    files = ", ".join(spec.files[r] for r in _ROLES)
    if source is None:
        offline_fix = (
            f"To work offline, put the four files ({files}) into one folder and set "
            f"{ENV_DATA_DIR}=/that/folder (or pass data_dir=...)"
        )
    else:
        missing = [spec.files[r] for r in _ROLES if not (folder / spec.files[r]).exists()]
        chosen = f"{ENV_DATA_DIR} is set to" if source == ENV_DATA_DIR else "data_dir is"
        lacks = (
            f"the four files {files}"  # all of them: named once
            if len(missing) == len(_ROLES)
            else f"{', '.join(missing)} (of the four files {files})"
        )
        offline_fix = (
            f"{chosen} {str(folder)!r}, which lacks {lacks}; to work offline, put them there"
        )
    try:
        import pooch
    except ImportError:
        raise DatasetError(
            f"{spec.name} file {name} is not in {folder}, and downloading it needs pooch: "
            f"pip install 'xprop[data]'.  {offline_fix}."
        ) from None

    # Folders made here are removed again if every mirror fails: a failed download leaves
    # no empty folder behind (a mistyped --data-dir must not become a new folder).
    created = [p for p in (folder, *folder.parents) if not p.exists()]
    folder.mkdir(parents=True, exist_ok=True)
    failures = []
    for mirror in spec.mirrors:
        url = mirror.rstrip("/") + "/" + name
        try:
            # pooch downloads to a temporary file, checks the hash, then renames: a failed
            # or corrupt download never leaves a file behind.
            pooch.retrieve(
                url,
                known_hash=f"sha256:{spec.sha256[name]}",
                fname=name,
                path=folder,
                downloader=pooch.HTTPDownloader(progressbar=False, timeout=60),
            )
            return
        except Exception as exc:  # network, HTTP or hash errors: try the next mirror
            failures.append(f"  {url}: {exc.__class__.__name__}: {exc}")
    for made in created:  # innermost first; stops at the first folder that is not empty
        try:
            made.rmdir()
        except OSError:
            break
    raise DatasetError(
        f"could not download {spec.name} file {name} into {folder}; every mirror failed:\n"
        + "\n".join(failures)
        + f"\n{offline_fix}."
    )


# Files already hashed in this process, keyed by (path, size, mtime, expected digest), so
# that repeated loads (a test suite on five backends) hash each file once.
_VERIFIED: set[tuple[str, int, int, str]] = set()


def _verify(spec: _IdxDataset, path: Path, owned: bool) -> None:
    expected = spec.sha256[path.name]
    try:
        info = path.stat()  # follows symbolic links: the file that would be read
    except OSError as exc:  # a dangling link, a loop of links
        raise DatasetError(
            f"{spec.name} file {path} cannot be read ({exc}); replace it with the file "
            f"from {spec.mirrors[0]}{path.name}"
        ) from None
    if not stat.S_ISREG(info.st_mode):
        # Hashing a FIFO or /dev/zero would never end; a folder cannot be hashed.
        from xprop.files import file_kind

        target = path.resolve()
        shown = f"{path} (-> {target})" if target != path.absolute() else str(path)
        raise DatasetError(
            f"{spec.name} file {shown} is {file_kind(info.st_mode)}, not a regular file; "
            f"replace it with the file from {spec.mirrors[0]}{path.name}"
        )
    key = (str(path.resolve()), info.st_size, info.st_mtime_ns, expected)
    if key in _VERIFIED:
        return
    size = spec.sizes.get(path.name)
    if size is not None and info.st_size != size:
        problem = f"it is {info.st_size} bytes, expected {size}"
    else:
        actual = _sha256(path)
        if actual == expected:
            _VERIFIED.add(key)
            return
        problem = f"its SHA-256 is {actual}, expected {expected}"
    if owned:
        # Our own cache: a bad file there is useless, and deleting it lets the next call
        # download a fresh copy.
        path.unlink(missing_ok=True)
        fix = "it has been deleted; run again to download a fresh copy"
    else:
        fix = (
            f"replace it with the original file (from {spec.mirrors[0]}{path.name}), "
            "or delete it to have it downloaded again"
        )
    raise DatasetError(f"{spec.name} file {path} is corrupt or incomplete: {problem}; {fix}")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# --------------------------------------------------------------------------------------
# IDX parsing
# --------------------------------------------------------------------------------------

_UBYTE = 0x08  # the IDX type code of unsigned bytes, the only type MNIST uses


def _read_idx(path: Path) -> np.ndarray:
    """A read-only ``uint8`` array of the IDX file's dimensions (parsed once per process)."""
    stat = path.stat()
    return _read_idx_cached(str(path.resolve()), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=4)
def _read_idx_cached(path: str, size: int, mtime_ns: int) -> np.ndarray:
    # size and mtime are part of the key so that a replaced file is read again.
    name = Path(path).name
    try:
        with gzip.open(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError, zlib.error) as exc:
        raise DatasetError(
            f"{path} is not a complete gzip file ({exc.__class__.__name__}: {exc}); "
            f"replace {name} with the original file"
        ) from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != _UBYTE:
        raise DatasetError(
            f"{path} is not an IDX file of unsigned bytes: its magic number is "
            f"{data[:4].hex() or 'missing'}, expected 000008 followed by the number of "
            f"dimensions; replace {name} with the original file"
        )
    ndim = data[3]
    header = 4 + 4 * ndim
    if ndim == 0 or len(data) < header:
        raise DatasetError(
            f"{path} has a truncated IDX header ({len(data)} bytes for {ndim} dimensions); "
            f"replace {name} with the original file"
        )
    dims = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    expected = int(np.prod(dims, dtype=np.int64))
    if len(data) - header != expected:
        raise DatasetError(
            f"{path} should hold {expected} bytes of data for dimensions {dims}, but has "
            f"{len(data) - header}; the file is truncated or padded, replace {name} with the "
            "original file"
        )
    array = np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims)
    array.flags.writeable = False  # shared by every load in this process
    return array
