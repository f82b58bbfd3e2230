"""BSDS pipeline: configs compose and run a tiny step, eval-only runs, resume, missing data."""

from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

import matbackprop.engine.state as trainer_mod
from matbackprop.engine.checkpoint import load_checkpoint
from matbackprop.evaluate import evaluate
from matbackprop.tasks import DataError
from matbackprop.train import CONFIG_DIR, run
from tests.conftest import load_script
from tests.engine.bsds_tiny import BSDS_TINY

EXPERIMENTS = sorted(
    p.stem
    for p in (Path(CONFIG_DIR) / "experiment").glob("*.yaml")
    if "bsds" in p.stem or "table2" in p.stem
)
TINY = [*BSDS_TINY, "logger=none"]


def _cfg(tmp_path, experiment, extra=(), tiny=TINY):
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose(
            config_name="bsds",
            overrides=[f"experiment={experiment}", f"output_root={tmp_path}", *tiny, *extra],
        )


def test_experiment_list_is_complete():
    assert {
        "table2_deepncut_alexnet",
        "table2_deepncut_vgg16",
        "table2_ncut_alexnet_relu5",
        "demo_bsds_deepncut",
    } <= set(EXPERIMENTS)


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_composes_and_runs_a_tiny_step(tmp_path, experiment):
    cfg = _cfg(tmp_path, experiment)
    assert cfg.task == "bsds"
    if int(cfg.trainer.epochs) == 0:  # the not-fine-tuned rows are evaluated, not trained
        row = evaluate(cfg)
        assert row["epoch"] == 0  # untrained: 0 epochs (epochs are counted from 1)
    else:
        res = run(_cfg(tmp_path, experiment, ["trainer.epochs=1"]))
        row = res.last
        assert res.epochs_done == 1 and "train_loss" in row and "train_rank_z" in row
    assert 0 < row["val_cover_ods"] <= 1 and 0 < row["val_pri_ods"] <= 1 and row["val_vi_ods"] >= 0
    assert (
        row["val_cover_ois"] >= row["val_cover_ods"] - 1e-12
    )  # OIS picks the best scale per image
    run_dir = Path(cfg.run_dir)
    assert (run_dir / "metrics.csv").is_file()
    final = (run_dir / "final.json").is_file()  # trained: the test split, last and best weights
    segs = sorted((run_dir / ("segs_last" if final else "segs")).glob("*.mat"))
    if final:
        assert len(sorted((run_dir / "segs_best").glob("*.mat"))) == 2
    selects_on_test = not cfg.data.holdout  # the demo: reports its last epoch, selects nothing
    if int(cfg.trainer.epochs) == 0 or selects_on_test or final:
        assert len(segs) == 2  # official-format segmentations of the (test) val images
    else:  # trained: each epoch scores the held-out training image, never the test split
        assert row["val_images"] == 1 and segs == []


class Killed(Exception):
    pass


@pytest.mark.parametrize(
    "before_write", [False, True], ids=["after-checkpoint", "before-checkpoint"]
)
def test_resume_after_a_kill_matches_uninterrupted(tmp_path, monkeypatch, before_write):
    """The same command, killed around the epoch-1 checkpoint and rerun, ends identical."""
    extra = ["trainer.epochs=2", "trainer.eval_every=1"]
    a = _cfg(tmp_path / "a", "demo_bsds_deepncut", extra)
    run(a)
    b = _cfg(tmp_path / "b", "demo_bsds_deepncut", extra)
    real_save = trainer_mod.save_checkpoint

    def save_then_die(state, path):
        if Path(path).name == "last.pt" and before_write:
            raise Killed  # the epoch's metrics rows are written, its checkpoint is not
        real_save(state, path)
        if Path(path).name == "last.pt":
            raise Killed

    monkeypatch.setattr(trainer_mod, "save_checkpoint", save_then_die)
    with pytest.raises(Killed):
        run(b)
    monkeypatch.undo()
    res = run(b)
    assert res.resumed_from == (0 if before_write else 1)
    wa = load_checkpoint(Path(a.run_dir) / "last.pt")["model"]
    wb = load_checkpoint(Path(b.run_dir) / "last.pt")["model"]
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], rtol=0, atol=0)
    metrics = [(Path(c.run_dir) / "metrics.csv").read_text().splitlines() for c in (a, b)]
    strip = [
        [",".join(x for x in line.split(",")[:-2]) for line in m] for m in metrics
    ]  # no timings
    assert strip[0] == strip[1] and len(metrics[0]) == 3
    # per-scale table appended once per epoch (header + 2 epochs × 2 scales), no duplicate rows
    hist = [(Path(c.run_dir) / "tables" / "per_scale_by_epoch.csv").read_text() for c in (a, b)]
    assert hist[0] == hist[1] and len(hist[0].splitlines()) == 1 + 2 * 2


def test_untrained_evaluation_uses_the_training_initialisation(tmp_path):
    cfg = _cfg(tmp_path, "demo_bsds_deepncut", ["trainer.epochs=0"])
    row1 = evaluate(cfg)
    row2 = evaluate(cfg)  # deterministic, and the re-evaluation replaces the row
    assert row1 == row2
    lines = (Path(cfg.run_dir) / "metrics.csv").read_text().splitlines()
    assert len(lines) == 2


def test_missing_data_names_path_and_make_target(tmp_path):
    no_data = [o for o in TINY if not o.startswith("data")]
    cfg = _cfg(tmp_path, "table2_deepncut_alexnet", [f"data.root={tmp_path}/nope"], tiny=no_data)
    with pytest.raises(DataError, match=r"nope.*make data-bsds"):
        run(cfg)


def test_missing_checkpoint_is_a_clear_error(tmp_path):
    cfg = _cfg(tmp_path, "demo_bsds_deepncut", ["eval.checkpoint=best"])
    with pytest.raises(FileNotFoundError, match="best.pt"):
        evaluate(cfg)


def test_table2_row_and_segmentation_figure(tmp_path):
    cfg = _cfg(tmp_path / "runs", "table2_ncut_alexnet_relu5")
    row = evaluate(cfg)
    tables = load_script("make_tables")
    assert tables.main(["--runs", str(tmp_path / "runs"), "--out", str(tmp_path / "t")]) == 0
    md = (tmp_path / "t" / "table2.md").read_text()
    line = next(li for li in md.splitlines() if li.startswith("| NCut, AlexNet relu5"))
    cells = [c.strip() for c in line.split("|")[1:-1]]
    # row, protocol, cover ODS / OIS / Best, PRI, VI (no paper numbers), checkpoint, epochs
    assert cells[1] == "BSDS500"
    assert cells[2] == f"{row['val_cover_ods']:.3f}" and cells[3] == f"{row['val_cover_ois']:.3f}"
    assert cells[4] == f"{row['val_cover_best']:.3f}" and cells[6] == f"{row['val_vi_ods']:.3f}"
    assert cells[7:9] == ["not trained", "0/0"]
    assert (
        "- **NCut, AlexNet relu5 (not fine-tuned)**, BSDS500: BSDS500 (train → val, 2 images)" in md
    )
    assert (tmp_path / "t" / "table2_table2_ncut_alexnet_relu5_segs.png").stat().st_size > 1000


def test_reproduce_bsds_stops_without_data(tmp_path, capsys):
    code = load_script("reproduce").main(
        ["bsds", "--data-root", str(tmp_path / "none")]  # (--dry-run plans without data: exit 0)
    )
    assert code == 2
    assert "make data-bsds" in capsys.readouterr().err


def test_same_size_batches():
    from matbackprop.tasks.bsds import SameSizeBatches

    sizes = [(3, 4)] * 5 + [(4, 3)] * 3
    sampler = SameSizeBatches(sizes, batch_size=2)
    state = torch.random.get_rng_state()
    assert len(sampler) == 3 + 2
    assert torch.equal(torch.random.get_rng_state(), state)  # len() draws nothing
    batches = list(sampler)
    assert len(batches) == len(sampler)
    assert sorted(i for b in batches for i in b) == list(range(8))
    assert all(len({sizes[i] for i in b}) == 1 for b in batches)  # one orientation per batch


# ---------------------------------------------------------------- selection split (no test)
def test_holdout_split_is_seeded_disjoint_and_never_the_test_split(tmp_path):
    from matbackprop.tasks.bsds import BsdsTask

    extra = ["data.synthetic.n_train=10", "data.holdout=0.2", "trainer.epochs=1"]
    task = BsdsTask(_cfg(tmp_path, "table2_deepncut_alexnet", extra))
    train, held, test = (set(s.ids) for s in (task.train_set, task.holdout_set, task.val_set))
    assert len(held) == 2 and len(train) == 8 and not train & held
    assert not (train | held) & test
    again = BsdsTask(_cfg(tmp_path, "table2_deepncut_alexnet", extra))
    assert set(again.holdout_set.ids) == held  # seeded: the same images every time
    other = BsdsTask(_cfg(tmp_path, "table2_deepncut_alexnet", [*extra, "data.holdout_seed=1"]))
    assert set(other.holdout_set.ids) != held and len(other.holdout_set) == 2
    # nothing is held out without training (the not-fine-tuned rows) or with holdout 0
    assert BsdsTask(_cfg(tmp_path, "table2_ncut_alexnet_relu5", extra[:2])).holdout_set is None
    none = BsdsTask(_cfg(tmp_path, "table2_deepncut_alexnet", [*extra, "data.holdout=0"]))
    assert none.holdout_set is None and len(none.train_set) == 10
    with pytest.raises(ValueError, match="data.holdout"):
        BsdsTask(_cfg(tmp_path, "table2_deepncut_alexnet", [*extra, "data.holdout=1.5"]))


def test_selection_on_holdout_final_evaluation_on_test(tmp_path):
    """evaluate (picks best.pt) scores only held-out training images; final_evaluate scores the
    test split once, writes its segs, and equals the benchmark run on the test images directly."""
    from matbackprop.evaluation.covering import collect, evaluate_segs
    from matbackprop.tasks.bsds import BsdsTask

    cfg = _cfg(tmp_path, "table2_deepncut_alexnet", ["trainer.epochs=1"])
    task = BsdsTask(cfg)
    torch.manual_seed(0)
    model = task.build_model().eval()
    seen = []
    real = task.benchmark

    def spy(model, dataset, epoch, seg_dir):
        seen.append(list(dataset.ids))
        return real(model, dataset, epoch, seg_dir)

    task.benchmark = spy
    monitor = task.evaluate(model, 0)
    assert seen[-1] == task.holdout_set.ids and monitor["val_images"] == 1
    final = task.final_evaluate(model)
    assert seen[-1] == task.val_set.ids and final["val_images"] == 2
    assert all(isinstance(v, (int, float)) for v in final.values())
    segs = sorted(p.stem for p in (Path(cfg.run_dir) / "segs").glob("*.mat"))
    assert segs == sorted(task.val_set.ids)
    # independent: the benchmark on the written segs of the test images
    from matbackprop.evaluation.segment import read_segs

    results = [
        evaluate_segs(read_segs(Path(cfg.run_dir) / "segs" / f"{i}.mat"), task.val_set[k]["gts"])
        for k, i in enumerate(task.val_set.ids)
    ]
    assert final["val_cover_ods"] == pytest.approx(float(collect(results)["cover_ods"]))
    task.final_evaluate(model, which="best")
    assert len(list((Path(cfg.run_dir) / "segs_best").glob("*.mat"))) == 2


def test_sharded_benchmark_equals_single_process(tmp_path, monkeypatch):
    """Two ranks' shards, gathered, give the single-process benchmark exactly."""
    import matbackprop.tasks.bsds as bsds_mod

    cfg = _cfg(tmp_path, "table2_deepncut_alexnet", ["data.synthetic.n_val=3", "trainer.epochs=1"])
    task = bsds_mod.BsdsTask(cfg)
    torch.manual_seed(0)
    model = task.build_model().eval()
    single = task.final_evaluate(model)
    parts = {}
    for r in (0, 1):  # each "rank" scores its strided shard
        monkeypatch.setattr(bsds_mod, "shard", lambda n, r=r: list(range(r, n, 2)))
        monkeypatch.setattr(bsds_mod, "gather", lambda local, n, r=r: parts.setdefault(r, local))
        task.final_evaluate(model)  # this rank's images only
    merged = [None] * 3
    for r, local in parts.items():
        merged[r::2] = local
    monkeypatch.setattr(bsds_mod, "shard", lambda n: [])
    monkeypatch.setattr(bsds_mod, "gather", lambda local, n: merged)
    assert task.final_evaluate(model) == pytest.approx(single)
