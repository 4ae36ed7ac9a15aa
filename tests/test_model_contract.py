"""The registry contract, parametrised over every registered model: each capability it declares
behaves as DESIGN.md says, on tiny data with a fast version of its hyperparameters."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from genbench.config import ConfigError
from genbench.data import binarize, dequantize
from genbench.models import create_model, get_model_class, model_names
from genbench.models.base import Model, capabilities

MODELS = model_names()


def fitted(name, train, seed=0):
    return create_model(name, get_model_class(name).fast_params, device="cpu").fit(train, seed=seed)


def space_input(model, x, levels, seed=0):
    space = model.likelihood_space
    assert space in ("binary", "discrete")
    gen = torch.Generator().manual_seed(seed)
    return binarize(x, gen) if space == "binary" else dequantize(x, levels, gen)


ISSUE_MODELS = {
    # issue 2
    "gmm", "logistic_regression", "vae", "dcgan",
    # issue 3: classic generative models and discriminative baselines
    "kmeans", "gaussian_nb", "bernoulli_nb", "hmm", "bayes_net", "boltzmann", "rbm", "gb_rbm", "dbn",
    "knn", "svm", "random_forest", "mlp", "cnn", "crf", "ocsvm", "isolation_forest",
    # issue 4: deep generative models
    "autoencoder", "gan", "cgan", "cyclegan", "ddpm",
}


def test_registry_has_the_issue_models():
    assert ISSUE_MODELS <= set(MODELS)


def test_default_params_run_every_registered_model():
    """`dvc repro` with the default params.yaml trains every model the registry knows."""
    params = yaml.safe_load((Path(__file__).parents[1] / "params.yaml").read_text())
    assert set(params["models"]) == set(MODELS)


@pytest.mark.parametrize("name", MODELS)
def test_contract(name, tiny_digits, tmp_path):
    train, test = tiny_digits
    model = fitted(name, train)
    assert isinstance(model, Model)
    caps = capabilities(model)
    assert caps, f"{name} declares no capability"
    assert model.kind in ("generative", "discriminative", "anomaly")
    x = test.x[:20]
    outputs = {}
    if "generate" in caps:
        samples = model.sample(16, generator=torch.Generator().manual_seed(1))
        assert samples.shape == (16, *train.image_shape)
        assert samples.dtype == torch.float32
        assert samples.min() >= 0 and samples.max() <= 1 and torch.isfinite(samples).all()
        outputs["sample"] = samples
    if "density" in caps:
        info = model.likelihood_info
        assert info["estimator"] in ("exact", "lower_bound", "estimate") and info["method"]
        lp = torch.as_tensor(model.log_prob(space_input(model, x, train.levels)))
        assert lp.shape == (20,) and torch.isfinite(lp).all()
        outputs["log_prob"] = lp
    if "classify" in caps:
        proba = np.asarray(model.predict_proba(x))
        assert proba.shape == (20, 10)
        np.testing.assert_allclose(proba.sum(1), 1, atol=1e-6)
        outputs["proba"] = torch.as_tensor(proba)
    if "detect" in caps:
        score = torch.as_tensor(model.anomaly_score(x))
        assert score.shape == (20,) and torch.isfinite(score).all()
        outputs["anomaly"] = score
    if "represent" in caps:
        code = torch.as_tensor(model.encode(x))
        assert code.ndim == 2 and len(code) == 20
        outputs["encode"] = code

    # save/load round trip gives equal outputs
    model.save(tmp_path / name)
    loaded = type(model).load(tmp_path / name, device="cpu")
    # every network comes back on the requested device (a GPU in a real run; "meta" here, where none is)
    elsewhere = type(model).load(tmp_path / name, device="meta")
    for where, tensor in _every_tensor(elsewhere):
        if isinstance(tensor, torch.nn.Parameter) or where.endswith("(buffer)"):
            assert tensor.device.type == "meta", f"{name}: {where} stayed on {tensor.device} after load(device=...)"
    again = _outputs(loaded, caps, x, train.levels)
    for key, value in outputs.items():
        torch.testing.assert_close(again[key], value, msg=f"{name}.{key} differs after save/load")

    # same seed -> same result
    twin = fitted(name, train)
    for key, value in _outputs(twin, caps, x, train.levels).items():
        torch.testing.assert_close(value, outputs[key], msg=f"{name}.{key} differs between two fits with one seed")


def _outputs(model, caps, x, levels):
    out = {}
    if "generate" in caps:
        out["sample"] = model.sample(16, generator=torch.Generator().manual_seed(1))
    if "density" in caps:
        out["log_prob"] = torch.as_tensor(model.log_prob(space_input(model, x, levels)))
    if "classify" in caps:
        out["proba"] = torch.as_tensor(np.asarray(model.predict_proba(x)))
    if "detect" in caps:
        out["anomaly"] = torch.as_tensor(model.anomaly_score(x))
    if "represent" in caps:
        out["encode"] = torch.as_tensor(model.encode(x))
    return out


@pytest.mark.parametrize("name", MODELS)
def test_unknown_hyperparameter_is_named(name):
    with pytest.raises(ConfigError, match=rf"models\.{name}.*no_such_knob"):
        create_model(name, {"no_such_knob": 1})


def test_wrong_type_and_range_name_the_key():
    with pytest.raises(ConfigError, match=r"models\.gmm\.n_components.*int"):
        create_model("gmm", {"n_components": "three"})
    with pytest.raises(ConfigError, match=r"models\.gmm\.n_components.*>= 1"):
        create_model("gmm", {"n_components": 0})
    with pytest.raises(ConfigError, match=r"models\.gmm\.covariance_type.*one of"):
        create_model("gmm", {"covariance_type": "banana"})


def test_unknown_model_lists_registered_names():
    with pytest.raises(ConfigError) as error:
        create_model("transformer_xl", {})
    assert "gmm" in str(error.value) and "vae" in str(error.value)


def _every_tensor(obj, where="model", seen=None):
    """(path, tensor) for every parameter and buffer of every network an object holds, however nested."""
    seen = set() if seen is None else seen
    if id(obj) in seen:
        return
    seen.add(id(obj))
    if isinstance(obj, torch.nn.Module):
        for key, p in obj.named_parameters():
            yield f"{where}.{key}", p
        for key, b in obj.named_buffers():
            yield f"{where}.{key} (buffer)", b
    elif isinstance(obj, dict):
        for key, value in obj.items():
            yield from _every_tensor(value, f"{where}[{key!r}]", seen)
    elif isinstance(obj, (list, tuple)):
        for i, value in enumerate(obj):
            yield from _every_tensor(value, f"{where}[{i}]", seen)
    elif hasattr(obj, "__dict__") and not isinstance(obj, type) and type(obj).__module__.startswith("genbench"):
        for key, value in vars(obj).items():
            yield from _every_tensor(value, f"{where}.{key}", seen)


VALIDATED = [name for name in MODELS if "val" in __import__("inspect").signature(get_model_class(name).fit).parameters]


def test_the_models_with_training_curves_take_a_validation_split():
    assert {"vae", "autoencoder", "cnn", "crf", "ddpm", "rbm", "dbn", "gb_rbm", "boltzmann"} <= set(VALIDATED)


@pytest.mark.parametrize("name", VALIDATED)
def test_validation_curve_never_changes_the_fit(name, tiny_digits, digits_splits):
    """The held-out losses are logged per epoch as val_<loss>, and the fitted numbers are bit-identical
    to a fit without them (their draws use their own generator, under no_grad, in eval mode)."""
    train, test = tiny_digits
    val = digits_splits["val"]
    plain = fitted(name, train)
    logged = create_model(name, get_model_class(name).fast_params, device="cpu").fit(train, seed=0, val=val)
    val_keys = {k for row in logged.history for k in row if k.startswith("val_")}
    assert val_keys, f"{name}: no val_ column in its history"
    for key in val_keys:
        assert key[4:] in logged.history[0], f"{name}: {key} has no training counterpart"
        assert all(np.isfinite(row[key]) for row in logged.history if key in row)
    train_keys = [k for k in plain.history[0] if not k.startswith("val_")]
    assert [{k: r[k] for k in train_keys} for r in logged.history] == plain.history
    for attr, value in vars(plain).items():
        if isinstance(value, torch.nn.Module):
            for (k, a), b in zip(value.state_dict().items(), vars(logged)[attr].state_dict().values()):
                assert torch.equal(a, b), f"{name}.{attr}.{k} changed when a validation split was given"


def test_model_size_counts_parameters_and_fitted_arrays(tiny_digits):
    from genbench.provenance import model_size

    train, _ = tiny_digits
    cnn = fitted("cnn", train)
    assert model_size(cnn) == {"parameters": sum(p.numel() for p in cnn.net_.parameters()), "counted": "torch parameters"}
    knn = fitted("knn", train)
    size = model_size(knn)
    assert size["counted"] == "elements of fitted arrays" and size["parameters"] >= train.x.numel()
    lr = fitted("logistic_regression", train)
    assert model_size(lr)["parameters"] >= 10 * train.dim  # at least the coefficient matrix
