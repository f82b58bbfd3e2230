"""weights.py: which file a source names, strict loading, epochs counted from 1."""

import pytest
import torch
import torch.nn as nn

from matbackprop.engine.checkpoint import MissingCheckpointError, save_checkpoint
from matbackprop.errors import CheckpointError
from matbackprop.weights import eval_folder_name, load_model_weights, resolve_checkpoint


def _net(width: int = 3) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(2, width), nn.ReLU(), nn.Linear(width, 4))


def _run(tmp_path, best=True, last=True):
    """A run folder in the trainer's formats: best.pt and last.pt (format 2) of epoch 3."""
    run = tmp_path / "run"
    run.mkdir()
    if best:
        save_checkpoint(
            {"model": _net().state_dict(), "epoch": 3, "val_error": 10.0}, run / "best.pt"
        )
    if last:
        state = {"model": _net().state_dict(), "optimizer": {}, "epoch": 3, "step_in_epoch": None}
        save_checkpoint({**state, "format": 2}, run / "last.pt")
    return run


def test_run_folder_best_then_last(tmp_path, capsys):
    run = _run(tmp_path)
    assert resolve_checkpoint(run) == run / "best.pt"
    assert resolve_checkpoint(run, default="last") == run / "last.pt"
    (run / "best.pt").unlink()
    assert resolve_checkpoint(run) == run / "last.pt"
    assert "no best.pt, using last.pt" in capsys.readouterr().err
    (run / "last.pt").unlink()
    with pytest.raises(MissingCheckpointError, match=f"run folder {run} holds no weights"):
        resolve_checkpoint(run)


def test_names_relative_to_a_run_folder_are_exact(tmp_path):
    run = _run(tmp_path, best=False)
    assert resolve_checkpoint("last", run_dir=run) == run / "last.pt"
    with pytest.raises(MissingCheckpointError, match=r"checkpoint not found: .*best\.pt"):
        resolve_checkpoint("best", run_dir=run)  # no fallback when the file is named
    with pytest.raises(MissingCheckpointError, match="nothing.pt"):
        resolve_checkpoint(tmp_path / "nothing.pt")


def test_epochs_counted_from_1_for_both_formats(tmp_path):
    run = _run(tmp_path)
    best = load_model_weights(_net(), run)
    assert best["which"] == "best" and best["epoch"] == 3 and best["path"] == run / "best.pt"
    last = load_model_weights(_net(), run / "last.pt")
    assert last["which"] == "last" and last["epoch"] == 3
    cases = {  # name: (epoch, step_in_epoch, format 2?) -> epochs the weights were trained for
        "mid.pt": (3, 5, True, 2),  # inside epoch 3: 2 done
        "old.pt": (2, None, False, 3),  # before format 2: 0-based index 2, finished
        "old_mid.pt": (2, 5, False, 2),
    }
    for name, (epoch, step, fmt2, want) in cases.items():
        state = {"model": _net().state_dict(), "epoch": epoch, "step_in_epoch": step}
        save_checkpoint({**state, **({"format": 2} if fmt2 else {})}, run / name)
        assert load_model_weights(_net(), run / name)["epoch"] == want, name


def test_weights_are_loaded(tmp_path):
    run = _run(tmp_path)
    model = nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 4))  # other random init
    load_model_weights(model, run)
    for key, value in _net().state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key


def test_shape_mismatch_names_file_keys_shapes_and_config(tmp_path):
    run = _run(tmp_path)
    with pytest.raises(CheckpointError) as info:
        load_model_weights(_net(width=5), run)
    msg = str(info.value)
    assert f"checkpoint {run / 'best.pt'} does not fit the configured model" in msg
    assert "0.weight: checkpoint (3, 2) != model (5, 2)" in msg  # the first mismatching key
    assert (
        "0.bias: checkpoint (3,) != model (5,); 2.weight: checkpoint (4, 3) != model (4, 5)" in msg
    )
    assert "more" not in msg and "2.bias" not in msg  # (4,) fits
    assert str(run / "config.yaml") in msg
    extra = nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 4), nn.Linear(4, 1))
    with pytest.raises(CheckpointError, match="3.weight: missing in the checkpoint"):
        load_model_weights(extra, run)
    wide = nn.Sequential(*(nn.Linear(2, 2) for _ in range(3)))  # 4 shapes wrong, 2 keys missing
    with pytest.raises(CheckpointError, match="; and 3 more"):
        load_model_weights(wide, run)  # 3 shown
    save_checkpoint({"epoch": 1}, run / "empty.pt")
    with pytest.raises(CheckpointError, match="holds no model weights"):
        load_model_weights(_net(), run / "empty.pt")


def test_eval_folder_name_differs_per_path(tmp_path):
    a, b = tmp_path / "a" / "best.pt", tmp_path / "b" / "best.pt"
    assert eval_folder_name(a).startswith("best-") and len(eval_folder_name(a)) == 13
    assert eval_folder_name(a) != eval_folder_name(b)
