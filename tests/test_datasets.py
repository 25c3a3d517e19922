"""The MNIST loader: IDX parsing, hash checks, downloads and errors, on a tiny synthetic set.

Nothing here touches the internet: downloads go to a local HTTP server started by the test,
"offline" is a closed local port.  The real files are checked only when ``XPROP_DATA_DIR``
points at them.
"""

from __future__ import annotations

import gzip
import hashlib
import http.server
import os
import shutil
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import array_api_compat
import numpy as np
import pytest

import xprop
from xprop import datasets
from xprop.datasets import MNIST, DatasetError, _IdxDataset, _load_idx, load_mnist

CLOSED_PORT = "http://127.0.0.1:9/"  # the discard port: nothing listens, connection refused


# --------------------------------------------------------------------------------------
# A tiny IDX dataset: 6 training and 4 test images of 3 x 2 pixels (not square, on purpose)
# --------------------------------------------------------------------------------------


def idx_bytes(array: np.ndarray) -> bytes:
    """The IDX encoding of a uint8 array: magic 0x0000 08 ndim, big-endian dims, data."""
    header = bytes([0, 0, 0x08, array.ndim]) + np.asarray(array.shape, dtype=">u4").tobytes()
    return header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


RNG = np.random.default_rng(0)
ARRAYS = {
    "train_images": RNG.integers(0, 256, size=(6, 3, 2), dtype=np.uint8),
    "train_labels": np.array([0, 1, 9, 3, 9, 5], dtype=np.uint8),
    "test_images": RNG.integers(0, 256, size=(4, 3, 2), dtype=np.uint8),
    "test_labels": np.array([7, 0, 2, 2], dtype=np.uint8),
}
ARRAYS["train_images"][0, 0, 0] = 255  # so that normalize must reach exactly 1.0
# mtime=0: the same bytes, hence the same hashes, on every run.
CONTENT = {MNIST.files[r]: gzip.compress(idx_bytes(a), mtime=0) for r, a in ARRAYS.items()}


def tiny_spec(content: dict[str, bytes] = CONTENT, mirrors: tuple[str, ...] = (CLOSED_PORT,)):
    """A dataset description with MNIST's file names and the hashes of ``content``."""
    return _IdxDataset(
        name="tiny",
        files=MNIST.files,
        sha256={name: sha256(data) for name, data in content.items()},
        mirrors=mirrors,
    )


MNIST_LIKE = tiny_spec()


def write_files(folder: Path, content: dict[str, bytes] = CONTENT) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in content.items():
        (folder / name).write_bytes(data)
    return folder


def load(spec: _IdxDataset, data_dir=None, backend=None, **kwargs):
    options = {"normalize": True, "flatten": True, "one_hot_label": False, "dtype": None}
    options.update(kwargs)
    return _load_idx(spec, data_dir=data_dir, backend=backend, **options)


@pytest.fixture
def tiny_dir(tmp_path: Path) -> Path:
    return write_files(tmp_path / "data")


@pytest.fixture
def cache_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point xprop's per-user cache at a temporary folder; no XPROP_DATA_DIR."""
    root = tmp_path / "cache"
    monkeypatch.setattr(datasets, "_cache_root", lambda: root)
    monkeypatch.delenv(datasets.ENV_DATA_DIR, raising=False)
    return root


@pytest.fixture
def http_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, dict[str, bytes]]]:
    """A local HTTP server; yields its base URL and the dict of files it serves (mutable)."""
    files: dict[str, bytes] = {}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = files.get(self.path.lstrip("/"))
            self.send_response(200 if body is not None else 404)
            self.send_header("Content-Length", str(len(body or b"")))
            self.end_headers()
            self.wfile.write(body or b"")

        def log_message(self, *args: object) -> None:  # keep the test output clean
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    # A proxy configured on the machine must not see requests to the local server.
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/", files
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def host(backend: xprop.Backend, x) -> np.ndarray:
    return backend.to_numpy(x)


# --------------------------------------------------------------------------------------
# Shapes, dtypes and values on every backend
# --------------------------------------------------------------------------------------


def test_default_layout_on_every_backend(backend, tiny_dir):
    (x, t), (x_test, t_test) = load(MNIST_LIKE, tiny_dir, backend=backend)
    xp = backend.xp
    assert tuple(x.shape) == (6, 6)
    assert tuple(x_test.shape) == (4, 6)
    assert x.dtype == backend.dtype
    assert xp.isdtype(t.dtype, "signed integer")
    for a in (x, t, x_test, t_test):
        assert array_api_compat.device(a) == backend.device
    expected = ARRAYS["train_images"].reshape(6, 6).astype(np.float64) / 255
    np.testing.assert_array_equal(host(backend, x), expected)
    assert host(backend, x).max() == 1.0
    np.testing.assert_array_equal(host(backend, t), ARRAYS["train_labels"])
    np.testing.assert_array_equal(host(backend, t_test), ARRAYS["test_labels"])


def test_raw_images_one_hot_and_unflattened(backend, tiny_dir):
    (x, t), (x_test, t_test) = load(
        MNIST_LIKE, tiny_dir, backend=backend, normalize=False, flatten=False, one_hot_label=True
    )
    assert tuple(x.shape) == (6, 1, 3, 2)
    assert tuple(x_test.shape) == (4, 1, 3, 2)
    assert x.dtype == backend.xp.uint8
    np.testing.assert_array_equal(host(backend, x)[:, 0], ARRAYS["train_images"])
    assert tuple(t.shape) == (6, 10)
    assert t.dtype == backend.dtype
    np.testing.assert_array_equal(host(backend, t), np.eye(10)[ARRAYS["train_labels"]])
    np.testing.assert_array_equal(host(backend, t_test).argmax(axis=1), ARRAYS["test_labels"])


def test_dtype_argument_sets_the_float_dtype(tiny_dir):
    (x, t), _ = load(MNIST_LIKE, tiny_dir, backend="numpy", dtype="float32", one_hot_label=True)
    assert x.dtype == np.float32
    assert t.dtype == np.float32
    # The same scaling as the book: float32(pixel) / 255 in float32.
    expected = ARRAYS["train_images"].reshape(6, 6).astype(np.float32) / np.float32(255)
    np.testing.assert_array_equal(x, expected)


def test_returned_arrays_are_independent_of_the_parse_cache(tiny_dir):
    (x, _), _ = load(MNIST_LIKE, tiny_dir, backend="numpy", normalize=False)
    x[...] = 0  # the caller owns its arrays; the next load must not see this
    (x_again, _), _ = load(MNIST_LIKE, tiny_dir, backend="numpy", normalize=False)
    np.testing.assert_array_equal(x_again, ARRAYS["train_images"].reshape(6, 6))


# --------------------------------------------------------------------------------------
# Where the files are looked for
# --------------------------------------------------------------------------------------


def test_env_var_gives_the_data_dir(tiny_dir, monkeypatch):
    monkeypatch.setenv("XPROP_DATA_DIR", str(tiny_dir))
    (x, _), _ = load(MNIST_LIKE)
    assert tuple(x.shape) == (6, 6)


def test_data_dir_that_is_a_file_is_rejected(tmp_path):
    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("x")
    with pytest.raises(DatasetError, match="not a folder"):
        load(MNIST_LIKE, not_a_folder)


@pytest.mark.parametrize("blank", ["", "   "])
def test_empty_data_dir_means_not_set_like_an_empty_env_var(cache_root, monkeypatch, blank):
    """--data-dir "" and XPROP_DATA_DIR="" both mean: the cache folder, not the current one."""
    write_files(cache_root / "tiny")
    monkeypatch.chdir(cache_root.parent)  # an empty path must not mean "here"
    (x, _), _ = load(MNIST_LIKE, blank)
    assert tuple(x.shape) == (6, 6)
    monkeypatch.setenv("XPROP_DATA_DIR", blank)
    (x, _), _ = load(MNIST_LIKE)
    assert tuple(x.shape) == (6, 6)
    assert datasets._resolve_dir(MNIST_LIKE, blank) == datasets._resolve_dir(MNIST_LIKE, None)


def test_failed_download_leaves_no_new_folder(tmp_path):
    pytest.importorskip("pooch", reason="downloads need the optional dependency pooch")
    missing = tmp_path / "typo" / "in" / "path"
    with pytest.raises(DatasetError, match="could not download"):
        load(MNIST_LIKE, missing)  # the only mirror is a closed port
    assert not (tmp_path / "typo").exists()
    assert tmp_path.exists()  # what existed before stays


def test_each_file_is_hashed_once_per_process(tiny_dir, monkeypatch):
    calls = []
    real = datasets._sha256
    monkeypatch.setattr(datasets, "_sha256", lambda path: calls.append(path) or real(path))
    load(MNIST_LIKE, tiny_dir)
    load(MNIST_LIKE, tiny_dir, one_hot_label=True)
    assert len(calls) == 4


def _replace_with(path: Path, kind: str) -> None:
    path.unlink()
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "folder":
        path.mkdir()
    else:  # a link to an endless device
        path.symlink_to("/dev/zero")


@pytest.mark.skipif(sys.platform == "win32", reason="FIFOs and /dev/zero are POSIX")
@pytest.mark.parametrize(
    ("kind", "what"),
    [("fifo", "a FIFO"), ("folder", "a folder"), ("zero", "a character device")],
)
def test_a_data_file_that_is_not_a_regular_file_is_refused_before_hashing(tiny_dir, kind, what):
    """Hashing a FIFO or /dev/zero would never end; a folder gave a raw IsADirectoryError."""
    bad = tiny_dir / "train-labels-idx1-ubyte.gz"
    _replace_with(bad, kind)
    with pytest.raises(
        DatasetError, match=f"train-labels-idx1-ubyte.gz.* is {what}, not a regular"
    ):
        load(MNIST_LIKE, tiny_dir)
    assert bad.is_symlink() if kind == "zero" else bad.exists()  # never deleted


def test_a_data_file_of_the_wrong_size_is_refused_before_hashing(tiny_dir, monkeypatch):
    import dataclasses

    sizes = {name: len(data) for name, data in CONTENT.items()}
    spec = dataclasses.replace(MNIST_LIKE, sizes=sizes)
    hashed = []
    real = datasets._sha256
    monkeypatch.setattr(datasets, "_sha256", lambda path: hashed.append(path.name) or real(path))
    bad = tiny_dir / "t10k-images-idx3-ubyte.gz"
    bad.write_bytes(CONTENT["t10k-images-idx3-ubyte.gz"] + b"\0" * 5)
    size = sizes["t10k-images-idx3-ubyte.gz"]
    with pytest.raises(DatasetError, match=rf"it is {size + 5} bytes, expected {size}"):
        load(spec, tiny_dir)
    assert bad.name not in hashed  # refused on its size alone
    assert bad.exists()  # user data is never deleted


def test_mnist_knows_the_sizes_of_its_files(real_data_dir):
    for name, size in MNIST.sizes.items():
        assert (real_data_dir / name).stat().st_size == size


def test_missing_files_in_the_env_folder_are_named(tmp_path, monkeypatch):
    pytest.importorskip("pooch", reason="downloads need the optional dependency pooch")
    folder = write_files(tmp_path / "data")
    (folder / "t10k-labels-idx1-ubyte.gz").unlink()
    (folder / "train-images-idx3-ubyte.gz").unlink()
    monkeypatch.setenv("XPROP_DATA_DIR", str(folder))
    with pytest.raises(DatasetError) as info:
        load(MNIST_LIKE)
    message = str(info.value)
    assert f"XPROP_DATA_DIR is set to {str(folder)!r}" in message
    assert "lacks train-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz" in message
    assert "set XPROP_DATA_DIR=/that/folder" not in message
    monkeypatch.delenv("XPROP_DATA_DIR")
    with pytest.raises(DatasetError) as info:
        load(MNIST_LIKE, folder)
    assert f"data_dir is {str(folder)!r}" in str(info.value)


# --------------------------------------------------------------------------------------
# Corrupt, truncated and malformed files
# --------------------------------------------------------------------------------------


def test_bad_file_in_user_folder_is_reported_and_kept(tiny_dir):
    bad = tiny_dir / "t10k-labels-idx1-ubyte.gz"
    bad.write_bytes(b"not the file")
    with pytest.raises(DatasetError) as info:
        load(MNIST_LIKE, tiny_dir)
    message = str(info.value)
    assert "t10k-labels-idx1-ubyte.gz" in message
    assert sha256(b"not the file") in message
    assert MNIST_LIKE.sha256["t10k-labels-idx1-ubyte.gz"] in message
    assert "replace it" in message
    assert bad.read_bytes() == b"not the file"  # user data is never deleted


def test_bad_file_in_cache_is_deleted(cache_root):
    folder = write_files(cache_root / "tiny")
    bad = folder / "train-images-idx3-ubyte.gz"
    bad.write_bytes(CONTENT["train-images-idx3-ubyte.gz"][:-10])  # a partial copy
    with pytest.raises(DatasetError, match="has been deleted") as info:
        load(MNIST_LIKE)
    assert MNIST_LIKE.sha256["train-images-idx3-ubyte.gz"] in str(info.value)
    assert not bad.exists()


def test_truncated_gzip_raises(tmp_path):
    content = dict(CONTENT)
    content["train-images-idx3-ubyte.gz"] = content["train-images-idx3-ubyte.gz"][:-12]
    folder = write_files(tmp_path / "data", content)
    # The hash matches the truncated bytes, so the parser is what must notice.
    with pytest.raises(DatasetError, match="not a complete gzip file"):
        load(tiny_spec(content), folder)


@pytest.mark.parametrize(
    ("payload", "match"),
    [
        (idx_bytes(ARRAYS["train_images"])[:-5], "truncated or padded"),
        (idx_bytes(ARRAYS["train_images"]) + b"\0", "truncated or padded"),
        (b"\0\0\x0d\x03" + idx_bytes(ARRAYS["train_images"])[4:], "magic number is 00000d03"),
        (b"\0\0\x08\x03\0\0", "truncated IDX header"),
        (b"", "magic number is missing"),
    ],
    ids=["short", "long", "float-type", "short-header", "empty"],
)
def test_malformed_idx_raises(tmp_path, payload, match):
    content = dict(CONTENT)
    content["train-images-idx3-ubyte.gz"] = gzip.compress(payload, mtime=0)
    folder = write_files(tmp_path / "data", content)
    with pytest.raises(DatasetError, match=match):
        load(tiny_spec(content), folder)


def test_image_and_label_counts_must_match(tmp_path):
    content = dict(CONTENT)
    content["t10k-labels-idx1-ubyte.gz"] = gzip.compress(idx_bytes(np.zeros(3, np.uint8)))
    folder = write_files(tmp_path / "data", content)
    with pytest.raises(DatasetError, match=r"4 images but t10k-labels-idx1-ubyte\.gz has 3"):
        load(tiny_spec(content), folder)


def test_labels_out_of_range_raise(tmp_path):
    content = dict(CONTENT)
    content["t10k-labels-idx1-ubyte.gz"] = gzip.compress(idx_bytes(np.full(4, 10, np.uint8)))
    folder = write_files(tmp_path / "data", content)
    with pytest.raises(DatasetError, match="holds label 10"):
        load(tiny_spec(content), folder)


# --------------------------------------------------------------------------------------
# Downloads (from a local server) and working offline
# --------------------------------------------------------------------------------------


def test_missing_files_are_downloaded_into_the_cache(cache_root, http_server):
    pytest.importorskip("pooch", reason="downloads need the optional dependency pooch")
    url, served = http_server
    served.update(CONTENT)
    spec = tiny_spec(mirrors=(CLOSED_PORT, url))  # the first mirror is down: use the next
    (x, _), _ = load(spec)
    assert tuple(x.shape) == (6, 6)
    assert sorted(p.name for p in (cache_root / "tiny").iterdir()) == sorted(CONTENT)


def test_corrupt_download_leaves_no_file(cache_root, http_server):
    pytest.importorskip("pooch", reason="downloads need the optional dependency pooch")
    url, served = http_server
    served.update(CONTENT)
    served["train-labels-idx1-ubyte.gz"] = b"corrupted in transit"
    with pytest.raises(DatasetError) as info:
        load(tiny_spec(mirrors=(url,)))
    assert "train-labels-idx1-ubyte.gz" in str(info.value)
    assert "hash" in str(info.value).lower()
    names = {p.name for p in (cache_root / "tiny").iterdir()}
    assert "train-labels-idx1-ubyte.gz" not in names
    assert names <= set(CONTENT)  # no temporary files left either


def test_offline_without_data_says_where_to_put_the_files(cache_root):
    pytest.importorskip("pooch", reason="downloads need the optional dependency pooch")
    with pytest.raises(DatasetError) as info:
        load(MNIST_LIKE)
    message = str(info.value)
    assert CLOSED_PORT in message
    assert "XPROP_DATA_DIR" in message
    for name in MNIST.files.values():
        assert name in message
    assert str(cache_root / "tiny") in message


def test_missing_pooch_is_named_only_when_a_download_is_needed(tiny_dir, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "pooch", None)  # makes `import pooch` fail
    load(MNIST_LIKE, tiny_dir)  # all files present: no pooch needed
    with pytest.raises(DatasetError, match=r"pip install 'xprop\[data\]'"):
        load(MNIST_LIKE, tmp_path / "empty")


# --------------------------------------------------------------------------------------
# The real MNIST files, when XPROP_DATA_DIR points at them
# --------------------------------------------------------------------------------------

TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


@pytest.fixture(scope="module")
def real_data_dir() -> Path:
    folder = os.environ.get("XPROP_DATA_DIR")
    if not folder:
        pytest.skip("set XPROP_DATA_DIR to a folder with the four MNIST .gz files to run this")
    missing = [n for n in MNIST.files.values() if not (Path(folder) / n).is_file()]
    if missing:
        pytest.skip(f"XPROP_DATA_DIR={folder} lacks {', '.join(missing)}")
    return Path(folder)


def test_real_mnist_on_every_backend(real_data_dir, backend):
    # Raw pixels keep the copy to each backend small (uint8); scaling is tested above.
    (x, t), (x_test, t_test) = load_mnist(normalize=False, data_dir=real_data_dir, backend=backend)
    assert tuple(x.shape) == (60000, 784)
    assert tuple(x_test.shape) == (10000, 784)
    assert np.bincount(host(backend, t), minlength=10).tolist() == TRAIN_COUNTS
    assert np.bincount(host(backend, t_test), minlength=10).tolist() == TEST_COUNTS
    assert array_api_compat.device(x) == backend.device


def test_real_mnist_book_layout(real_data_dir):
    (x, t), (_, t_test) = load_mnist(
        flatten=False, one_hot_label=True, data_dir=real_data_dir, backend="numpy", dtype="float32"
    )
    assert x.shape == (60000, 1, 28, 28)
    assert x.dtype == np.float32
    assert float(x.min()) == 0.0
    assert float(x.max()) == 1.0
    assert t.shape == (60000, 10)
    assert t_test.sum(axis=0).tolist() == TEST_COUNTS


def test_real_mnist_is_verified_in_a_copy(real_data_dir, tmp_path):
    # A bad copy of a real file is caught by the real hashes (not only the tiny ones).
    folder = tmp_path / "mnist"
    folder.mkdir()
    for name in MNIST.files.values():
        shutil.copy(real_data_dir / name, folder / name)
    with (folder / "t10k-labels-idx1-ubyte.gz").open("r+b") as f:
        f.seek(100)
        f.write(b"\xff")
    with pytest.raises(DatasetError, match=r"t10k-labels-idx1-ubyte\.gz is corrupt"):
        load_mnist(data_dir=folder)


def test_a_folder_without_any_of_the_files_names_them_once(tmp_path, monkeypatch):
    """All four missing: the message named them as missing and again as 'the four files'."""
    pytest.importorskip("pooch", reason="downloads need the optional dependency pooch")
    folder = tmp_path / "empty"
    folder.mkdir()
    monkeypatch.setenv("XPROP_DATA_DIR", str(folder))
    with pytest.raises(DatasetError) as info:
        load(MNIST_LIKE)
    message = str(info.value)
    assert "which lacks the four files train-images-idx3-ubyte.gz" in message
    assert message.count("t10k-labels-idx1-ubyte.gz") == 1, message  # named once, not twice
