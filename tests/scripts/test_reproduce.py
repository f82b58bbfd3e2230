"""reproduce.py: options and overrides in any order; --dry-run prints the plan without data."""

import json
import shlex

import pytest
from tests.conftest import load_script

from matbackprop.results.paper import TABLES

reproduce = load_script("reproduce")

# every REPRO_ARGS form the README and `make help` show, plus overrides before options
FORMS = {
    "coco --launcher slurm hydra.launcher.partition=gpu": (
        {"launcher": "slurm"},
        ["hydra.launcher.partition=gpu"],
    ),
    "bsds --data-root /data/bsds trainer.epochs=1": (
        {"data_root": "/data/bsds"},
        ["trainer.epochs=1"],
    ),
    "coco --data-root DIR optim.lr=0.01 trainer.epochs=2": (
        {"data_root": "DIR"},
        ["optim.lr=0.01", "trainer.epochs=2"],
    ),
    "coco --keep-going": ({"keep_going": True}, []),
    "coco trainer.epochs=1 --launcher local hydra.launcher.timeout_min=5 --dry-run": (
        {"launcher": "local", "dry_run": True},
        ["trainer.epochs=1", "hydra.launcher.timeout_min=5"],
    ),
    "--dry-run bsds trainer.epochs=1 --data-root /d": (
        {"dry_run": True, "data_root": "/d"},
        ["trainer.epochs=1"],
    ),
}


@pytest.mark.parametrize("form", FORMS)
def test_options_and_overrides_in_any_order(form):
    opts, overrides = FORMS[form]
    args = reproduce.parse(shlex.split(form))
    assert args.overrides == overrides
    for key, value in opts.items():
        assert str(getattr(args, key)) == str(value), key


def test_dry_run_without_data_prints_the_plan(tmp_path, capsys):
    out = tmp_path / "outputs"
    # a finished row and a partial one: skipped / resumed in the plan
    # (a run's folder names the overrides that change it: <row>/trainer.epochs=2, see README)
    done = out / "bsds" / "table2_deepncut_alexnet" / "trainer.epochs=2"
    part = out / "bsds" / "table2_bsds300_deepncut_alexnet" / "trainer.epochs=2"
    fp = {"fingerprint": {}}
    for folder, status in [
        (done, {"finished": True, "epochs_done": 30, **fp}),
        (part, {"finished": False, "epochs_done": 3, "step_in_epoch": 17, **fp}),
    ]:
        folder.mkdir(parents=True)
        (folder / "status.json").write_text(json.dumps(status))
    (out / "bsds" / "table2_ncut_vgg16" / "trainer.epochs=2").mkdir(parents=True)
    (out / "bsds" / "table2_ncut_vgg16" / "trainer.epochs=2" / "eval.json").write_text("{}")
    argv = ["bsds", "--dry-run", "--data-root", str(tmp_path / "none"), "--output-root", str(out)]
    code = reproduce.main([*argv, "trainer.epochs=2"])
    captured = capsys.readouterr()
    assert code == 0 and "make data-bsds" in captured.err  # a plan; the real run needs the data
    text = captured.out
    assert "runs done" not in text + captured.err
    names = list(TABLES["table2"]["experiments"])
    assert all(f" {n}: " in text for n in names)
    assert "table2_deepncut_alexnet: skip (finished)" in text
    assert "table2_ncut_vgg16: skip (finished)" in text
    assert "table2_bsds300_deepncut_alexnet: resume (epochs done 3/2, step 17)" in text
    assert "table2_deepncut_vgg16: start" in text
    assert f"run folder: {out / 'bsds' / 'table2_deepncut_vgg16'}" in text
    # BSDS500 trains on train+val (300) minus 10% held out; BSDS300 on 200 minus 20; batch 1
    assert "270 steps/epoch x 2 epochs = 540 steps (270 training items, known size)" in text
    assert "180 steps/epoch x 2 epochs = 360 steps (180 training items, known size)" in text
    assert text.count("no training (evaluation only)") == 8
    assert "matbackprop.evaluate --config-name bsds experiment=table2_ncut_alexnet_relu3" in text
    # rows still to run: deepncut_vgg16 (540) + bsds300 alexnet (360) + bsds300 vgg16 (360)
    assert "12 rows; 1260 training steps in the rows still to run" in text


def test_dry_run_coco_uses_the_known_sizes_and_shows_the_multirun(tmp_path, capsys):
    argv = ["coco", "--launcher", "slurm", "hydra.launcher.partition=gpu", "--dry-run"]
    code = reproduce.main([*argv, "--data-root", str(tmp_path), "--output-root", str(tmp_path)])
    text = capsys.readouterr().out
    assert code == 0  # a plan, also without data
    n = 604_907
    assert f"{n // 100} steps/epoch x 10 epochs" in text  # batch 100, last short batch dropped
    assert "known size (upper bound)" in text
    assert text.count("[plan] ") == len(TABLES["table1"]["experiments"]) + 2  # + total, multirun
    multirun = next(li for li in text.splitlines() if "as one multirun" in li)
    assert "hydra/launcher=slurm" in multirun and "hydra.launcher.partition=gpu" in multirun
    assert "experiment=table1_alexnet,table1_alexnet_s," in multirun


def test_a_misspelled_override_is_exit_2_naming_it(tmp_path, capsys):
    from matbackprop.cli import call_cli

    argv = ["coco", "optim.lrr=0.1", "--dry-run", "--data-root", str(tmp_path)]
    assert call_cli(reproduce.main, argv) == 2
    err = capsys.readouterr().err
    assert "optim.lrr" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_dry_run_with_data_counts_the_images_and_exits_0(tmp_path, capsys):
    from matbackprop.data.synthetic_bsds import make_synthetic_bsds

    root = make_synthetic_bsds(tmp_path / "bsds", n_train=5, n_val=3, n_test=4)
    argv = ["bsds", "--dry-run", "--data-root", str(root), "--output-root", str(tmp_path / "o")]
    assert reproduce.main(argv) == 0
    text = capsys.readouterr().out
    # BSDS500 trains on train+val (8) minus 1 held out; BSDS300 on train (5) minus 1; batch 1
    assert "7 steps/epoch x 30 epochs = 210 steps (7 training items, counted)" in text
    assert "4 steps/epoch x 30 epochs = 120 steps (4 training items, counted)" in text
    assert "runs done" not in text


def test_a_corrupt_status_json_is_exit_2_naming_it(tmp_path, capsys):
    from matbackprop.cli import call_cli

    run_dir = tmp_path / "bsds" / "table2_deepncut_alexnet"
    run_dir.mkdir(parents=True)
    (run_dir / "status.json").write_text("{not json")
    argv = ["bsds", "--dry-run", "--data-root", str(tmp_path), "--output-root", str(tmp_path)]
    assert call_cli(reproduce.main, argv) == 2
    err = capsys.readouterr().err
    assert str(run_dir / "status.json") in err and "Traceback" not in err


def test_time_steps_times_real_steps_and_estimates_wall_time(tmp_path):
    # the demo rows at their (small) sizes: 2 real training steps each, then the estimate
    from matbackprop.results.plan import RowPlan

    plans = [
        RowPlan(name, "matbackprop.train", ["python"], tmp_path / name, 64, 10, 3)
        for name in ("demo_coco_deepo2p", "demo_bsds_deepncut")
    ]
    plans.append(RowPlan("done", "matbackprop.train", ["python"], tmp_path, 64, 10, 3,
                         state="skip (finished)"))  # fmt: skip
    timed = reproduce.time_plans(plans, 2)
    assert [t["experiment"] for t in timed] == ["demo_coco_deepo2p", "demo_bsds_deepncut"]
    assert all(p.step_s and p.step_s > 0 for p in plans[:2]) and plans[2].step_s is None
    lines = reproduce.estimate_lines(plans, timed, gpus=4, nodes=2)
    coco = next(ln for ln in lines if "demo_coco_deepo2p" in ln)
    assert " on 1, " in coco and "on 4 x 2" in coco
    s = plans[0].step_s
    one, eight = 10 * 3 * s, 10 * 3 * s / 8  # 10 steps/epoch x 3 epochs, linear over 8 ranks
    from matbackprop.results.plan import duration

    assert f"-> {duration(one)} on 1, {duration(eight)} on 4 x 2" in coco
    assert lines[-1].startswith("[plan]   table: ") and "linear scaling" in lines[0]
    assert any("ranks need trainer.batch_size >= 8" in ln for ln in lines)  # BSDS demo batch 4
