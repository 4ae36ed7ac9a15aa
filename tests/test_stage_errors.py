"""The stages' behaviour on bad input and interruption, without DVC."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from genbench.data.prepare import run_prepare
from genbench.cli import main
from genbench.io import atomic_directory
from genbench.training import TrainingDiverged, train_loop

ROOT = Path(__file__).resolve().parents[1]


def test_nan_loss_names_model_epoch_and_step():
    calls = []

    def step(batch, state):
        calls.append(state.step)
        return {"loss": float("nan") if state.step == 5 else 1.0}

    with pytest.raises(TrainingDiverged, match=r"toy: loss 'loss' became nan at epoch 2, step 5"):
        train_loop("toy", step, (torch.zeros(12, 1),), epochs=3, batch_size=4, seed=0, device=torch.device("cpu"))
    assert calls[-1] == 5


def test_failed_stage_leaves_no_output(tmp_path):
    target = tmp_path / "results" / "digits" / "vae" / "model"
    with pytest.raises(RuntimeError):
        with atomic_directory(target) as out:
            (out / "model.pt").write_text("half")
            raise RuntimeError("killed")
    assert not target.exists()
    assert not list(target.parent.iterdir()), "temporary directory left behind"


def _params(tmp_path: Path, **override) -> Path:
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["models"] = {"gmm": {"n_components": 1}, "vae": {"epochs": 300, "hidden_dim": 512}}
    params["datasets"], params["overrides"] = {"digits": params["datasets"]["digits"]}, {}
    params["evaluator"]["epochs"] = 1
    params.update(override)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    return path


def test_unknown_names_fail_at_once_listing_registered(tmp_path, capsys):
    params = _params(tmp_path)
    data = yaml.safe_load(params.read_text())
    data["models"]["stylegan9"] = {}
    params.write_text(yaml.safe_dump(data))
    assert main(["--params", str(params), "--root", str(tmp_path), "model", "digits", "gmm"]) == 1
    err = capsys.readouterr().err
    assert "stylegan9" in err and "gmm" in err and "vae" in err and "registered" in err
    data["models"].pop("stylegan9")
    data["datasets"]["imagenet"] = {}
    params.write_text(yaml.safe_dump(data))
    assert main(["--params", str(params), "--root", str(tmp_path), "prepare", "digits"]) == 1
    err = capsys.readouterr().err
    assert "imagenet" in err and "digits" in err and "fashion_mnist" in err


def test_bad_hyperparameter_names_the_key(tmp_path, capsys):
    params = _params(tmp_path)
    data = yaml.safe_load(params.read_text())
    data["models"]["gmm"]["n_components"] = "many"
    params.write_text(yaml.safe_dump(data))
    assert main(["--params", str(params), "--root", str(tmp_path), "model", "digits", "gmm"]) == 1
    assert "models.gmm.n_components" in capsys.readouterr().err


def test_missing_dataset_says_how_to_provide_it(tmp_path, capsys):
    params = _params(tmp_path, datasets={"mnist": {"download": False}})
    assert main(["--params", str(params), "--root", str(tmp_path), "prepare", "mnist"]) == 1
    err = capsys.readouterr().err
    assert "data_dir" in err and "train-images-idx3-ubyte" in err
    assert not (tmp_path / "results" / "mnist" / "data").exists()


def test_preparing_twice_writes_identical_bytes(tmp_path, monkeypatch):
    """DVC hashes files: if the same data were written with different bytes (a timing, a temporary
    file name inside a torch archive), every downstream stage would rerun for nothing."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    first, second = tmp_path / "a", tmp_path / "b"
    for root in (first, second):  # as the engine runs it: from two clones, each named by its absolute path
        root.mkdir()
        monkeypatch.chdir(root)
        run_prepare(params, "digits", root=root)
    names = sorted(p.name for p in (first / "results" / "digits" / "data").iterdir())
    assert names == ["meta.json", "splits.pt"]
    for name in names:
        assert (first / "results" / "digits" / "data" / name).read_bytes() == (second / "results" / "digits" / "data" / name).read_bytes(), name
    assert not [p for p in (first / "results" / "digits").iterdir() if p.name.startswith(".")], "temporary files left behind"


def test_losses_left_on_the_device_give_the_curve_that_floats_give():
    """The loop reads the losses once per epoch; the history is identical to reading them every step."""
    def step_tensor(batch, state):
        (x,) = batch
        return {"loss": (x.float() * 1.1 + state.step).mean(), "other": x.float().std()}

    def step_float(batch, state):
        return {k: float(v) for k, v in step_tensor(batch, state).items()}

    data = (torch.arange(48.0).reshape(48, 1) / 7,)
    run = dict(epochs=3, batch_size=5, seed=1, device=torch.device("cpu"), drop_last=False)
    assert train_loop("toy", step_tensor, data, **run) == train_loop("toy", step_float, data, **run)


def test_a_nan_tensor_loss_names_its_step():
    def step(batch, state):
        return {"loss": torch.tensor(float("inf") if state.step == 7 else 0.5)}

    with pytest.raises(TrainingDiverged, match=r"toy: loss 'loss' became inf at epoch 3, step 7 \(batch 2 of 3\)"):
        train_loop("toy", step, (torch.zeros(12, 1),), epochs=4, batch_size=4, seed=0, device=torch.device("cpu"))
