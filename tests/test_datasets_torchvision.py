"""MNIST / Fashion-MNIST / CIFAR-10 loaders, on small files written here in the original formats."""

from __future__ import annotations

import gzip
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest

from genbench.data import get_loader
from genbench.data.prepare import PreparedData, prepare
from genbench.data.torchvision_datasets import DatasetUnavailable

N_TRAIN, N_TEST = 20, 10


def write_idx(path: Path, array: np.ndarray, *, gz: bool = False) -> Path:
    """An idx file as LeCun's: magic 0x08 0x<ndim>, big-endian dims, then the uint8 data."""
    data = struct.pack(">i", 0x0800 + array.ndim) + struct.pack(f">{array.ndim}i", *array.shape) + array.tobytes()
    path = path.with_name(path.name + ".gz") if gz else path
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def make_mnist(directory: Path, *, gz: bool = False, seed: int = 0, n_train: int = N_TRAIN,
               n_test: int = N_TEST) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": np.arange(n_train, dtype=np.uint8) % 10,
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": (np.arange(n_test, dtype=np.uint8) * 3) % 10,
    }
    directory.mkdir(parents=True, exist_ok=True)
    for name, array in arrays.items():
        write_idx(directory / name, array, gz=gz)
    return arrays


def make_cifar(directory: Path, *, per_batch: int = 4, meta: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """cifar-10-batches-py/: data_batch_1..5 and test_batch, each {b'data': uint8 (N, 3072), b'labels': [...]}."""
    rng = np.random.default_rng(1)
    folder = directory / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    images = rng.integers(0, 256, (6 * per_batch, 3072), dtype=np.uint8)
    labels = rng.integers(0, 10, 6 * per_batch)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for i, name in enumerate(names):
        part = slice(i * per_batch, (i + 1) * per_batch)
        with open(folder / name, "wb") as f:
            pickle.dump({b"data": images[part], b"labels": labels[part].tolist(), b"batch_label": name.encode()}, f)
    if meta:
        with open(folder / "batches.meta", "wb") as f:
            pickle.dump({b"label_names": [f"class{i}".encode() for i in range(10)]}, f)
    return images.reshape(-1, 3, 32, 32), labels


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("name", ["mnist", "fashion_mnist"])
def test_idx_from_data_dir(tmp_path, name, gz):
    arrays = make_mnist(tmp_path, gz=gz)
    raw = get_loader(name)(data_dir=tmp_path)
    assert raw.train_images.shape == (N_TRAIN, 1, 28, 28) and raw.test_images.shape == (N_TEST, 1, 28, 28)
    assert raw.train_images.dtype == np.uint8 and raw.train_labels.dtype == np.int64 and raw.levels == 256
    np.testing.assert_array_equal(raw.train_images[:, 0], arrays["train-images-idx3-ubyte"])
    np.testing.assert_array_equal(raw.test_images[:, 0], arrays["t10k-images-idx3-ubyte"])
    np.testing.assert_array_equal(raw.train_labels, arrays["train-labels-idx1-ubyte"])
    np.testing.assert_array_equal(raw.test_labels, arrays["t10k-labels-idx1-ubyte"])
    assert len(raw.class_names) == 10
    suffix = ".gz" if gz else ""
    assert raw.source["path"] == str(tmp_path.resolve())
    assert set(raw.source["files"]) == {name + suffix for name in arrays}
    assert all(len(h) == 64 for h in raw.source["files"].values())


def test_idx_found_one_level_down(tmp_path):
    arrays = make_mnist(tmp_path / "FashionMNIST" / "raw", gz=True)
    raw = get_loader("fashion_mnist")(data_dir=tmp_path)
    np.testing.assert_array_equal(raw.train_labels, arrays["train-labels-idx1-ubyte"])
    make_mnist(tmp_path / "a")
    make_mnist(tmp_path / "b")
    with pytest.raises(DatasetUnavailable, match="several subdirectories"):
        get_loader("mnist")(data_dir=tmp_path)


@pytest.mark.parametrize("name, folder", [("mnist", "MNIST"), ("fashion_mnist", "FashionMNIST")])
def test_through_torchvision(tmp_path, name, folder):
    arrays = make_mnist(tmp_path / folder / "raw", seed=3)  # torchvision reads the uncompressed raw files
    raw = get_loader(name)(root=tmp_path, download=False)
    assert raw.train_images.shape == (N_TRAIN, 1, 28, 28) and raw.train_images.dtype == np.uint8
    np.testing.assert_array_equal(raw.train_images[:, 0], arrays["train-images-idx3-ubyte"])
    np.testing.assert_array_equal(raw.test_labels, arrays["t10k-labels-idx1-ubyte"])
    assert raw.test_labels.dtype == np.int64
    assert raw.source["origin"] == f"torchvision.datasets.{folder}" and len(raw.source["files"]) == 4


@pytest.mark.parametrize("name", ["mnist", "fashion_mnist", "cifar10"])
def test_missing_without_download(tmp_path, name):
    with pytest.raises(DatasetUnavailable, match="data_dir") as err:
        get_loader(name)(root=tmp_path, download=False)
    assert f"datasets.{name}.data_dir" in str(err.value)
    if name == "fashion_mnist":
        assert "apt-get install dataset-fashion-mnist" in str(err.value)
    assert not any(p.is_file() for p in tmp_path.rglob("*"))  # nothing written that could look complete


def test_missing_files_in_data_dir(tmp_path):
    make_mnist(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(DatasetUnavailable, match="t10k-labels-idx1-ubyte"):
        get_loader("mnist")(data_dir=tmp_path)


@pytest.mark.parametrize("corrupt, problem", [
    (lambda d: (d / "train-images-idx3-ubyte").write_bytes(b"\x00\x00\x08\x01" + bytes(100)), "magic number"),
    (lambda d: (d / "train-images-idx3-ubyte").write_bytes((d / "train-images-idx3-ubyte").read_bytes()[:-5]),
     "truncated"),
    (lambda d: write_idx(d / "train-labels-idx1-ubyte", np.zeros(N_TRAIN - 1, np.uint8)), "labels"),
])
def test_corrupted_idx(tmp_path, corrupt, problem):
    make_mnist(tmp_path)
    corrupt(tmp_path)
    with pytest.raises(DatasetUnavailable, match=problem) as err:
        get_loader("mnist")(data_dir=tmp_path)
    assert "train-" in str(err.value) and str(tmp_path) in str(err.value)


def test_corrupted_gz(tmp_path):
    make_mnist(tmp_path, gz=True)
    (tmp_path / "t10k-images-idx3-ubyte.gz").write_bytes(b"not gzip at all")
    with pytest.raises(DatasetUnavailable, match="t10k-images-idx3-ubyte.gz"):
        get_loader("mnist")(data_dir=tmp_path)


@pytest.mark.parametrize("parent", [True, False])
def test_cifar_from_data_dir(tmp_path, parent):
    images, labels = make_cifar(tmp_path)
    raw = get_loader("cifar10")(data_dir=tmp_path if parent else tmp_path / "cifar-10-batches-py")
    assert raw.train_images.shape == (20, 3, 32, 32) and raw.test_images.shape == (4, 3, 32, 32)
    assert raw.train_images.dtype == np.uint8 and raw.train_labels.dtype == np.int64 and raw.levels == 256
    np.testing.assert_array_equal(raw.train_images, images[:20])
    np.testing.assert_array_equal(raw.test_images, images[20:])
    np.testing.assert_array_equal(raw.train_labels, labels[:20])
    np.testing.assert_array_equal(raw.test_labels, labels[20:])
    assert raw.class_names == [f"class{i}" for i in range(10)]
    assert "batches.meta" in raw.source["files"] and "test_batch" in raw.source["files"]


def test_cifar_default_names_and_errors(tmp_path):
    make_cifar(tmp_path, meta=False)
    assert get_loader("cifar10")(data_dir=tmp_path).class_names[:2] == ["airplane", "automobile"]
    with open(tmp_path / "cifar-10-batches-py" / "data_batch_3", "wb") as f:
        pickle.dump({b"data": np.zeros((4, 100), np.uint8), b"labels": [0] * 4}, f)
    with pytest.raises(DatasetUnavailable, match="data_batch_3"):
        get_loader("cifar10")(data_dir=tmp_path)
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").write_bytes(b"garbage")
    with pytest.raises(DatasetUnavailable, match="cannot read .*data_batch_3"):
        get_loader("cifar10")(data_dir=tmp_path)
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").unlink()
    with pytest.raises(DatasetUnavailable, match="lacks data_batch_3"):
        get_loader("cifar10")(data_dir=tmp_path)


def test_prepare_end_to_end(tmp_path):
    data = tmp_path / "mnist"
    written = make_mnist(data, gz=True, n_train=50)  # stratified splits: val needs >= 1 image per class
    out = tmp_path / "prepared"
    meta = prepare("mnist", {"data_dir": str(data), "val_fraction": 0.2}, out, seed=0)
    assert meta["sizes"] == {"train": 40, "val": 10, "test": N_TEST}
    assert sum(meta["sizes"].values()) == 50 + N_TEST
    assert meta["levels"] == 256 and meta["image_shape"] == [1, 28, 28]
    assert set(meta["source"]["files"]) == {f"{n}.gz" for n in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                                                                 "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
    prepared = PreparedData(out)
    assert prepared.levels == 256 and prepared.meta["sha256"]["train_x"] and len(prepared.meta["sha256"]["test_x"]) == 64
    for split in ("train", "val", "test"):
        s = prepared.split(split)
        assert len(s) == meta["sizes"][split] and s.image_shape == (1, 28, 28)
        assert 0.0 <= float(s.x.min()) and float(s.x.max()) <= 1.0
    test = prepared.split("test")  # intensities k / 255 of the written bytes
    np.testing.assert_allclose(np.sort((test.x * 255).round().numpy().ravel()),
                               np.sort(written["t10k-images-idx3-ubyte"].ravel()))


def test_max_train_and_max_test_take_stratified_subsets(tmp_path):
    data = tmp_path / "mnist"
    written = make_mnist(data, n_train=100, n_test=50)
    meta = prepare("mnist", {"data_dir": str(data), "val_fraction": 0.2, "max_train": 30, "max_test": 20},
                   tmp_path / "prepared", seed=0)
    assert meta["sizes"] == {"train": 30, "val": 20, "test": 20}
    prepared = PreparedData(tmp_path / "prepared")
    for split, n in (("train", 30), ("test", 20)):
        labels = prepared.split(split).y
        assert sorted(labels.bincount(minlength=10).tolist()) == [n // 10] * 10  # stratified: every class alike
    # the test subset is made of the original test images
    test_rows = {row.tobytes() for row in written["t10k-images-idx3-ubyte"]}
    kept = (prepared.split("test").x * 255).round().numpy().astype(np.uint8)
    assert all(image.tobytes() in test_rows for image in kept)
