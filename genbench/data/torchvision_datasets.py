"""MNIST, Fashion-MNIST and CIFAR-10: 8-bit images (256 levels) with their official test splits.

Each loader reads either
- a local directory of the ORIGINAL files (`data_dir`, e.g. what Debian's `dataset-fashion-mnist`
  installs into /usr/share/datasets/fashion-mnist), or
- torchvision's copy under `root` (`torchvision.datasets.MNIST / FashionMNIST / CIFAR10`), which
  it downloads when `download` is true.

Parsing is torchvision's where it can be: the datasets' `.data` / `.targets`, and its idx readers
(`torchvision.datasets.mnist.read_image_file` / `read_label_file`) for local idx files. Written
here by hand, and kept short, is only what torchvision does not do: decompressing `.gz` idx files
(its readers open files plainly), checking the idx header and size first (its readers report a
malformed file with bare asserts, which also vanish under `python -O`), and reading local CIFAR-10
pickles (its `CIFAR10` class accepts only files whose md5 matches the official release). Every
failure to find or read the data raises `DatasetUnavailable`, saying which file and how to provide
it. Nothing is written here; torchvision manages its own files under `root`.
"""

from __future__ import annotations

import gzip
import hashlib
import pickle
import struct
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from genbench.data import RawDataset, register_dataset

LEVELS = 256
IDX_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
CIFAR_FOLDER = "cifar-10-batches-py"
CIFAR_FILES = tuple(f"data_batch_{i}" for i in range(1, 6)) + ("test_batch",)
CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
FASHION_MNIST_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                         "Ankle boot"]
DEBIAN_FASHION_MNIST = "/usr/share/datasets/fashion-mnist"
# torchvision.datasets class of each; also the folder under `root` where MNIST-like ones keep raw/
TORCHVISION_CLASS = {"mnist": "MNIST", "fashion_mnist": "FashionMNIST", "cifar10": "CIFAR10"}

# What a failed torchvision load or download raises (URLError and socket timeouts are OSErrors;
# corrupt raw files give AssertionError / TypeError / ValueError from its readers).
_LOAD_ERRORS = (OSError, RuntimeError, ValueError, TypeError, AssertionError, EOFError, pickle.UnpicklingError)


class DatasetUnavailable(RuntimeError):
    """The dataset's files are neither in `data_dir` nor obtainable through torchvision."""


def _how_to_provide(name: str) -> str:
    if name == "cifar10":
        files = f"the python-pickle files {', '.join(CIFAR_FILES)} (and batches.meta), that is the folder " \
                f"{CIFAR_FOLDER}/ of cifar-10-python.tar.gz or its parent"
    else:
        files = f"the original files {', '.join(IDX_FILES)}, each plain or .gz (also looked for one level down, " \
                f"e.g. in raw/ or {TORCHVISION_CLASS[name]}/raw/)"
    text = f"set `datasets.{name}.data_dir` in params.yaml to a directory holding {files}; or allow network " \
           f"access with `datasets.{name}.download: true` so that torchvision downloads them into `root`."
    if name == "fashion_mnist":
        text += f" On Debian/Ubuntu, `apt-get install dataset-fashion-mnist` installs the original files into " \
                f"{DEBIAN_FASHION_MNIST}, which can serve as data_dir."
    return text


def _unavailable(name: str, problem: str) -> DatasetUnavailable:
    return DatasetUnavailable(f"dataset '{name}' is not available: {problem}. To provide it, {_how_to_provide(name)}")


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# --- MNIST and Fashion-MNIST ---------------------------------------------------------------------


def _find_idx_dir(name: str, data_dir: Path) -> tuple[Path, dict[str, Path]]:
    """The directory holding the four idx files (plain preferred over .gz), and each file's path."""

    def files_in(d: Path) -> dict[str, Path] | None:
        found = {}
        for stem in IDX_FILES:
            hits = [d / f for f in (stem, stem + ".gz") if (d / f).is_file()]
            if not hits:
                return None
            found[stem] = hits[0]
        return found

    if not data_dir.is_dir():
        raise _unavailable(name, f"data_dir {data_dir} is not a directory")
    for d in (data_dir, data_dir / "raw", data_dir / TORCHVISION_CLASS[name] / "raw"):
        if (found := files_in(d)) is not None:
            return d, found
    below = [(d, f) for d in sorted(p for p in data_dir.iterdir() if p.is_dir()) if (f := files_in(d)) is not None]
    if len(below) > 1:
        raise _unavailable(name, f"data_dir {data_dir} has the idx files in several subdirectories "
                                 f"({', '.join(str(d) for d, _ in below)}); point data_dir at one of them")
    if not below:
        raise _unavailable(name, f"neither data_dir {data_dir} nor its subdirectories hold all of "
                                 f"{', '.join(IDX_FILES)} (plain or .gz)")
    return below[0]


def _read_idx(name: str, path: Path, *, images: bool) -> np.ndarray:
    """Check an idx file's header and size, then parse it with torchvision's reader."""
    from torchvision.datasets.mnist import read_image_file, read_label_file

    try:
        data = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError) as err:
        raise _unavailable(name, f"cannot read {path}: {err}") from err
    magic, ndim, header = (2051, 3, 16) if images else (2049, 1, 8)  # 0x0803: uint8, 3 dims; 0x0801: uint8, 1 dim
    if len(data) < header or struct.unpack(">i", data[:4])[0] != magic:
        found = struct.unpack(">i", data[:4])[0] if len(data) >= 4 else "none (file too short)"
        raise _unavailable(name, f"{path} is not an idx {'image' if images else 'label'} file: magic number "
                                 f"{found}, expected {magic}")
    dims = struct.unpack(f">{ndim}i", data[4:header])
    if images and dims[1:] != (28, 28):
        raise _unavailable(name, f"{path} holds images of size {dims[1]}x{dims[2]}, expected 28x28")
    if len(data) != header + int(np.prod(dims)):
        raise _unavailable(name, f"{path} has {len(data) - header} data bytes, its header {list(dims)} says "
                                 f"{int(np.prod(dims))} (truncated or corrupted)")
    reader = read_image_file if images else read_label_file
    if path.suffix != ".gz":
        return reader(str(path)).numpy()
    with tempfile.TemporaryDirectory() as tmp:  # torchvision's readers open the file plainly
        (Path(tmp) / path.stem).write_bytes(data)
        return reader(str(Path(tmp) / path.stem)).numpy()


def _load_idx_dir(name: str, data_dir: Path, class_names: list[str]) -> RawDataset:
    directory, files = _find_idx_dir(name, Path(data_dir))
    arrays = {stem: _read_idx(name, path, images="images" in stem) for stem, path in files.items()}
    for split in ("train", "t10k"):
        n_images, labels = len(arrays[f"{split}-images-idx3-ubyte"]), arrays[f"{split}-labels-idx1-ubyte"]
        if len(labels) != n_images:
            raise _unavailable(name, f"{files[f'{split}-labels-idx1-ubyte']} has {len(labels)} labels but "
                                     f"{files[f'{split}-images-idx3-ubyte']} has {n_images} images")
        if len(labels) and labels.max() >= len(class_names):
            raise _unavailable(name, f"{files[f'{split}-labels-idx1-ubyte']} has label {labels.max()}, "
                                     f"expected 0..{len(class_names) - 1}")
    return RawDataset(
        train_images=arrays["train-images-idx3-ubyte"][:, None],
        train_labels=arrays["train-labels-idx1-ubyte"].astype(np.int64),
        test_images=arrays["t10k-images-idx3-ubyte"][:, None],
        test_labels=arrays["t10k-labels-idx1-ubyte"].astype(np.int64),
        levels=LEVELS,
        class_names=list(class_names),
        source={"origin": "local files (data_dir)", "path": str(directory.resolve()),
                "files": {p.name: _sha256_file(p) for p in files.values()}},
    )


# --- CIFAR-10 ------------------------------------------------------------------------------------


def _load_cifar_dir(name: str, data_dir: Path) -> RawDataset:
    data_dir = Path(data_dir)
    directory = data_dir / CIFAR_FOLDER if (data_dir / CIFAR_FOLDER).is_dir() else data_dir
    missing = [f for f in CIFAR_FILES if not (directory / f).is_file()]
    if missing:
        raise _unavailable(name, f"{directory} lacks {', '.join(missing)}")

    def unpickle(path: Path) -> dict[str, Any]:
        try:
            with open(path, "rb") as f:
                entry = pickle.load(f, encoding="bytes")
            return {k.decode() if isinstance(k, bytes) else k: v for k, v in entry.items()}
        except (OSError, EOFError, AttributeError, ValueError, pickle.UnpicklingError) as err:
            raise _unavailable(name, f"cannot read {path} as a CIFAR-10 pickle: {err}") from err

    parts = {}
    for file in CIFAR_FILES:
        entry = unpickle(directory / file)
        if "data" not in entry or "labels" not in entry:
            raise _unavailable(name, f"{directory / file} has no 'data' / 'labels' entries")
        images, labels = np.asarray(entry["data"]), np.asarray(entry["labels"], dtype=np.int64)
        if images.dtype != np.uint8 or images.ndim != 2 or images.shape[1] != 3 * 32 * 32:
            raise _unavailable(name, f"{directory / file}: 'data' is {images.dtype} {images.shape}, "
                                     f"expected uint8 (N, 3072)")
        if len(labels) != len(images) or (len(labels) and not 0 <= labels.min() <= labels.max() <= 9):
            raise _unavailable(name, f"{directory / file}: {len(labels)} labels for {len(images)} images, "
                                     f"or labels outside 0..9")
        parts[file] = (images.reshape(-1, 3, 32, 32), labels)
    class_names, read = list(CIFAR10_CLASSES), list(CIFAR_FILES)
    if (directory / "batches.meta").is_file():
        class_names = [n.decode() if isinstance(n, bytes) else str(n)
                       for n in unpickle(directory / "batches.meta")["label_names"]]
        read.append("batches.meta")
    train = [parts[f] for f in CIFAR_FILES[:-1]]
    return RawDataset(
        train_images=np.concatenate([x for x, _ in train]),
        train_labels=np.concatenate([y for _, y in train]),
        test_images=parts["test_batch"][0],
        test_labels=parts["test_batch"][1],
        levels=LEVELS,
        class_names=class_names,
        source={"origin": "local files (data_dir)", "path": str(directory.resolve()),
                "files": {f: _sha256_file(directory / f) for f in read}},
    )


# --- through torchvision -------------------------------------------------------------------------


def _load_torchvision(name: str, root: str | Path, download: bool, class_names: list[str] | None) -> RawDataset:
    import torchvision.datasets  # imported here: listing the datasets should not pay for it

    cls = getattr(torchvision.datasets, TORCHVISION_CLASS[name])
    try:
        train, test = (cls(str(root), train=t, download=download) for t in (True, False))
    except _LOAD_ERRORS as err:
        reason = "torchvision could not download it" if download else "it is not under root and download is false"
        raise _unavailable(name, f"{reason} (root {root}; torchvision said: {str(err).strip()})") from err

    def nchw(data: Any) -> np.ndarray:
        array = np.asarray(data, dtype=np.uint8)
        return array[:, None] if array.ndim == 3 else np.ascontiguousarray(array.transpose(0, 3, 1, 2))

    if name == "cifar10":
        folder = Path(root) / CIFAR_FOLDER
        files = [folder / f for f in (*CIFAR_FILES, "batches.meta")]
    elif all(Path(train.processed_folder, f).is_file() for f in (train.training_file, train.test_file)):
        folder = Path(train.processed_folder)  # torchvision's legacy cache, which it reads in preference
        files = [folder / train.training_file, folder / train.test_file]
    else:
        folder = Path(train.raw_folder)
        files = [folder / f for f in IDX_FILES]
    return RawDataset(
        train_images=nchw(train.data),
        train_labels=np.asarray(train.targets, dtype=np.int64),
        test_images=nchw(test.data),
        test_labels=np.asarray(test.targets, dtype=np.int64),
        levels=LEVELS,
        class_names=list(class_names or train.classes),
        source={"origin": f"torchvision.datasets.{cls.__name__}", "path": str(folder.resolve()),
                "files": {f.name: _sha256_file(f) for f in files if f.is_file()}},
    )


def _load(name: str, data_dir: str | Path | None, download: bool, root: str | Path,
          class_names: list[str] | None) -> RawDataset:
    if data_dir is not None:
        if name == "cifar10":
            return _load_cifar_dir(name, Path(data_dir))
        return _load_idx_dir(name, Path(data_dir), class_names or [])
    return _load_torchvision(name, root, download, class_names)


@register_dataset("mnist")
def load_mnist(*, data_dir: str | Path | None = None, download: bool = True, root: str | Path = "downloads") -> RawDataset:
    """MNIST handwritten digits: 60 000 train / 10 000 test images, 1x28x28."""
    return _load("mnist", data_dir, download, root, [str(i) for i in range(10)])


@register_dataset("fashion_mnist")
def load_fashion_mnist(*, data_dir: str | Path | None = None, download: bool = True,
                       root: str | Path = "downloads") -> RawDataset:
    """Fashion-MNIST (Zalando): 60 000 train / 10 000 test images, 1x28x28, 10 clothing classes."""
    return _load("fashion_mnist", data_dir, download, root, FASHION_MNIST_CLASSES)


@register_dataset("cifar10")
def load_cifar10(*, data_dir: str | Path | None = None, download: bool = True, root: str | Path = "downloads") -> RawDataset:
    """CIFAR-10: 50 000 train / 10 000 test images, 3x32x32; class names from batches.meta."""
    return _load("cifar10", data_dir, download, root, None)
