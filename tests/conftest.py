import os

# One thread everywhere: the test models are tiny, and two threads on a 2-core machine that is
# doing anything else slow small BLAS and torch calls down by orders of magnitude.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import pytest  # noqa: E402
import torch  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402

from genbench.data import Split
from genbench.data.digits import load
from genbench.data.prepare import make_splits

os.environ.setdefault("GENBENCH_PROGRESS", "0")
torch.set_num_threads(1)
threadpool_limits(1)


@pytest.fixture(scope="session")
def digits_splits():
    raw = load()
    s = make_splits(raw, {"val_fraction": 0.1, "test_fraction": 0.2}, seed=0)

    def split(name):
        return Split(s[f"{name}_x"].float() / 16, s[f"{name}_y"], 17, 10, name)

    return {name: split(name) for name in ("train", "val", "test")}


@pytest.fixture(scope="session")
def tiny_digits(digits_splits):
    """200 training images, 60 test images: enough for the contract, fast to fit."""
    train, test = digits_splits["train"], digits_splits["test"]
    return Split(train.x[:200], train.y[:200], 17, 10, "train"), Split(test.x[:60], test.y[:60], 17, 10, "test")


@pytest.fixture(scope="session", autouse=True)
def engine():
    """The stages' tasks run on Dask (genbench.engine): here on one single-threaded worker in this process."""
    from genbench.engine import in_process

    with in_process():
        yield
