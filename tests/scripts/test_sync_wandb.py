"""`make sync-wandb`: the offline fragments of one resumed run are uploaded as that one run."""

from tests.conftest import load_script

from matbackprop.engine.logging import build_logger, read_offline_run

sync = load_script("sync_wandb")


def test_fragments_of_a_resumed_run_sync_together_oldest_first(tmp_path, monkeypatch, capsys):
    import wandb

    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "cfg"))
    sessions = [("a", "idA"), ("a", "idA"), ("b", "idB"), ("a", "idA")]  # idA resumed twice
    for i, (folder, run_id) in enumerate(sessions):
        logger = build_logger({"name": "wandb"}, tmp_path / folder, {}, run_id=run_id)
        logger.log({"train/loss": float(i)}, step=i)
        logger.finish()
    wandb.teardown()  # the service has written the runs out

    assert sync.main(["--runs", str(tmp_path), "--dry-run"]) == 0
    lines = [li for li in capsys.readouterr().out.splitlines() if " sync " in li]
    assert len(lines) == 2  # one upload per run id, not one per folder
    ida = lines[0].split()
    assert ida[1:4] == ["sync", "--id", "idA"] and len(ida) == 7
    folders = ida[4:]
    assert all(f"{tmp_path}/a/wandb/offline-run-" in f for f in folders)
    losses = [read_offline_run(f)["history"][0]["train/loss"] for f in folders]
    assert losses == [0.0, 1.0, 3.0]  # fragments in the order they were written
    assert lines[1].split()[3] == "idB"


def test_no_run_folder_is_exit_2(tmp_path, capsys):
    assert sync.main(["--runs", str(tmp_path / "nothing")]) == 2
    assert "logger=wandb" in capsys.readouterr().err
