"""The compare stage's feature spaces: the bounded evaluator features, the pixel PCA, and a user-weighted
InceptionV3 (tested with untrained weights: nothing is downloaded)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from genbench.config import ConfigError
from genbench.evaluator import EvaluatorNet
from genbench.metrics.feature_spaces import SampleSpaces, load_network, network_features


@pytest.fixture(scope="module")
def inception_weights(tmp_path_factory):
    from torchvision.models import inception_v3

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("weights") / "inception_v3.pth"
    torch.save(inception_v3(weights=None, aux_logits=True, init_weights=True).state_dict(), path)  # as torchvision ships it
    return path


def test_inception_features_match_torchvision_with_its_own_preprocessing(inception_weights):
    from torchvision.models import inception_v3
    from torchvision.transforms import v2

    images = torch.rand(3, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    ours = network_features(load_network("inception_v3", str(inception_weights)), images)
    reference = inception_v3(weights=None, aux_logits=True, init_weights=False)
    reference.load_state_dict(torch.load(inception_weights, weights_only=True))
    reference.fc = torch.nn.Identity()
    preprocess = v2.Compose([v2.Resize((299, 299), antialias=False),
                             v2.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])])
    with torch.no_grad():
        expected = reference.eval()(preprocess(images.repeat(1, 3, 1, 1))).double().numpy()
    assert ours.shape == (3, 2048)
    np.testing.assert_allclose(ours, expected, rtol=1e-4, atol=1e-5)


def test_bad_weights_and_unknown_networks_are_refused(tmp_path):
    with pytest.raises(ConfigError, match="no file"):
        load_network("inception_v3", str(tmp_path / "missing.pth"))
    torch.save({"conv.weight": torch.zeros(1)}, tmp_path / "other.pth")
    with pytest.raises(ConfigError, match="not an InceptionV3 state dict"):
        load_network("inception_v3", str(tmp_path / "other.pth"))
    with pytest.raises(ConfigError, match="unknown network"):
        load_network("dinov3", str(tmp_path / "other.pth"))


def test_sample_spaces_hold_every_space_and_the_pixel_space_is_the_training_pca(inception_weights):
    from sklearn.decomposition import PCA

    torch.manual_seed(0)
    train, reference = torch.rand(40, 1, 8, 8), torch.rand(6, 1, 8, 8)
    spaces = SampleSpaces(EvaluatorNet((1, 8, 8), 10), train, reference, levels=17,
                          networks={"inception_v3": str(inception_weights)})
    assert spaces.second == ["pixels", "inception_v3"]
    assert {k: v["dim"] for k, v in spaces.describe().items()} == {"evaluator": 64, "pixels": 32, "inception_v3": 2048}
    pca = PCA(n_components=32, svd_solver="full").fit(train.flatten(1).double().numpy())
    np.testing.assert_allclose(np.abs(spaces.reference["pixels"]),
                               np.abs(pca.transform(reference.flatten(1).double().numpy())), atol=1e-9)
    stored = np.full((2, 1, 8, 8), 16, dtype=np.uint8)
    assert torch.equal(spaces.images(stored), torch.ones(2, 1, 8, 8))
