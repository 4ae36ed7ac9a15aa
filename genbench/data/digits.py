"""scikit-learn's 8x8 handwritten digits (UCI optdigits test part): 1797 images, 17 intensity levels.

Ships with scikit-learn, so it needs no network: the embedded default dataset.
"""

from __future__ import annotations

import numpy as np
from genbench.data import RawDataset, register_dataset


@register_dataset("digits")
def load(**_: object) -> RawDataset:
    from sklearn.datasets import load_digits  # slow to import: only the prepare stage needs it

    bunch = load_digits()
    images = bunch.images.astype(np.uint8)[:, None, :, :]  # values 0..16
    return RawDataset(
        train_images=images,
        train_labels=bunch.target.astype(np.int64),
        test_images=None,
        test_labels=None,
        levels=17,
        class_names=[str(c) for c in bunch.target_names],
        source={"origin": "sklearn.datasets.load_digits"},
    )
