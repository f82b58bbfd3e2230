"""predict on tiny demo runs: the README's commands, the validation pipeline's own numbers,
the benchmark's own segmentations, eval.checkpoint=<path>, bad input exit 2."""

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from PIL import Image

from matbackprop.engine.records import read_csv
from matbackprop.evaluate import evaluate
from matbackprop.evaluation.segment import read_segs
from matbackprop.predict import main
from matbackprop.tasks import task_factory
from matbackprop.train import CONFIG_DIR, run
from matbackprop.weights import eval_folder_name
from tests.engine.bsds_tiny import BSDS_TINY
from tests.engine.coco_tiny import compose_coco, tiny_overrides

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow
VAL_IMAGE = "val2014/COCO_val2014_000001000001.jpg"  # 64 x 64 in the tiny set


def _coco_overrides(base: Path) -> list[str]:
    """The README's demo layout (<base>/coco/demo_coco_deepo2p, data in <base>/data), tiny."""
    run_dir = base / "coco" / "demo_coco_deepo2p"
    return ["experiment=demo_coco_deepo2p", *tiny_overrides(run_dir, base / "data")]


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """Tiny one-epoch COCO and BSDS runs laid out as ``make demo`` lays out outputs/demo."""
    base = tmp_path_factory.mktemp("demo")
    run(compose_coco(_coco_overrides(base)))
    bsds = [
        "experiment=demo_bsds_deepncut",
        *BSDS_TINY,
        f"data.root={base / 'data' / 'bsds_synthetic'}",
        f"run_dir={base / 'bsds' / 'demo_bsds_deepncut'}",
        "trainer.epochs=1",
        "logger=none",
    ]
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        run(compose(config_name="bsds", overrides=bsds))
    return base


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _readme_commands() -> list[list[str]]:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Predict on your own images", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```bash\n(.*?)```", section, re.S).group(1)
    return [shlex.split(line) for line in block.splitlines() if line.startswith("python -m")]


def _reference_probabilities(run_dir: Path) -> dict[int, torch.Tensor]:
    """Softmax of the run's own validation forward pass (CocoTask.predict), best.pt weights."""
    cfg = compose_coco(_coco_overrides(run_dir.parents[1]))
    task = task_factory("coco")(cfg)
    model = task.build_model()
    model.load_state_dict(torch.load(run_dir / "best.pt", weights_only=True)["model"])
    logits, _, _ = task.predict(model.eval(), list(range(len(task.val_set))))
    ann_ids = [task.val_set[i]["ann_id"] for i in range(len(task.val_set))]
    return dict(zip(ann_ids, torch.softmax(logits.double(), 1)))


def test_readme_commands(demo, tmp_path, monkeypatch, capsys):
    """Every command of the README section, on the tiny demo layout, does what it says."""
    commands = _readme_commands()
    assert [c[2] for c in commands] == ["matbackprop.predict"] * 4 + ["matbackprop.evaluate"]
    monkeypatch.chdir(tmp_path)
    coco_run, bsds_run = demo / "coco" / "demo_coco_deepo2p", demo / "bsds" / "demo_bsds_deepncut"
    source_before = _snapshot(coco_run)
    for argv in commands:
        args = [a.replace("outputs/demo", str(demo)) for a in argv[3:]]
        if argv[2] == "matbackprop.predict":
            assert main(args) == 0, capsys.readouterr().err
        else:  # evaluate: the README's overrides on top of the tiny sizes the run was made with
            tiny = [
                o for o in _coco_overrides(demo) if not o.startswith(("run_dir=", "data.root="))
            ]
            row = evaluate(compose_coco([*tiny, *args]))
    names = [r["class"] for r in read_csv(coco_run / "tables" / "per_class.csv")]
    final = json.loads((coco_run / "final.json").read_text())

    boxes = read_csv(tmp_path / "preds.csv")  # two --box on one image, top 3
    assert [(r["x"], r["y"], r["w"], r["h"]) for r in boxes] == [
        ("2.0", "3.0", "40.0", "30.0"),
        ("0.0", "0.0", "64.0", "64.0"),
    ]
    for r in boxes:
        probs = [float(r[f"prob{k}"]) for k in (1, 2, 3)]
        assert probs == sorted(probs, reverse=True) and 0 < probs[-1] and probs[0] <= 1
        assert {r[f"class{k}"] for k in (1, 2, 3)} <= set(names) and "class4" not in r

    rows = json.loads((tmp_path / "preds.json").read_text())  # the run's val annotation file
    reference = _reference_probabilities(coco_run)
    assert sorted(r["annotation_id"] for r in rows) == sorted(reference)
    for r in rows:
        p = torch.tensor([r["probabilities"][n] for n in names], dtype=torch.float64)
        assert p.sum().item() == pytest.approx(1.0, abs=1e-9)
        torch.testing.assert_close(p, reference[r["annotation_id"]], rtol=1e-5, atol=1e-6)
        ranked = [t["probability"] for t in r["top_k"]]
        assert len(ranked) == len(names) and ranked == sorted(ranked, reverse=True)  # 5 -> 4
        assert r["top_k"][0]["class"] == names[int(p.argmax())]
    labels = {ann["id"]: ann["category_id"] for ann in json.loads(
        (demo / "data" / "annotations" / "instances_val2014.json").read_text())["annotations"]}  # fmt: skip
    cats = sorted({c for c in labels.values()})
    wrong = [names[cats.index(labels[r["annotation_id"]])] != r["top_k"][0]["class"] for r in rows]
    assert 100 * np.mean(wrong) == pytest.approx(final["best"]["val_error"])  # the run's score

    bsds_final = json.loads((bsds_run / "final.json").read_text())
    ods = int(bsds_final["best"]["val_cover_ods_k"])
    for folder, ks in (("bsds", [ods]), ("bsds_k", [2, 4])):
        out = tmp_path / "predictions" / folder
        assert json.loads((out / "predict.json").read_text())["ks"] == ks
        segs = read_segs(out / "3000.mat")
        assert len(segs) == len(ks)
        for s in segs:
            assert s.shape == (48, 64) and s.dtype == np.uint16
            assert sorted(np.unique(s)) == list(range(1, int(s.max()) + 1))  # labels 1..n
        png = np.asarray(Image.open(out / "3000.png"))
        assert png.shape == (48, 64 * (1 + len(ks)), 3)
        assert np.array_equal(png[:, :64], np.asarray(Image.open(
            demo / "data" / "bsds_synthetic/BSR/BSDS500/data/images/test/3000.jpg").convert("RGB")))  # fmt: skip

    best = coco_run / "best.pt"
    out = demo / "coco" / "scored" / "eval" / eval_folder_name(best)
    assert json.loads((out / "eval.json").read_text())["checkpoint"] == str(best)
    assert (out / "config.yaml").is_file() and row["epoch"] == final["best"]["epoch"] == 1
    assert row["val_error"] == pytest.approx(final["best"]["val_error"])  # whole val set
    assert _snapshot(coco_run) == source_before  # nothing written into the source run


def test_val_segmentations_equal_the_benchmarks(demo, tmp_path):
    """The run's own final evaluation wrote segs_best/<id>.mat for val images at eval.ks."""
    bsds_run = demo / "bsds" / "demo_bsds_deepncut"
    images = sorted((demo / "data" / "bsds_synthetic/BSR/BSDS500/data/images/val").glob("*.jpg"))
    argv = ["--run", str(bsds_run), "--images", *map(str, images), "--k", "2", "3"]
    assert main([*argv, "--out", str(tmp_path), "--device", "cpu"]) == 0
    for image in images:
        ours, theirs = (
            read_segs(tmp_path / f"{image.stem}.mat"),
            read_segs(bsds_run / "segs_best" / f"{image.stem}.mat"),
        )
        assert len(ours) == len(theirs) == 2
        assert all(np.array_equal(a, b) for a, b in zip(ours, theirs))


def test_eval_checkpoint_run_folder(demo, tmp_path):
    """A run folder as eval.checkpoint: its best.pt, scored into this run's eval/ folder."""
    coco_run = demo / "coco" / "demo_coco_deepo2p"
    over = [o for o in _coco_overrides(demo) if not o.startswith("run_dir=")]
    row = evaluate(compose_coco([*over, f"run_dir={tmp_path}", f"eval.checkpoint={coco_run}"]))
    record = tmp_path / "eval" / eval_folder_name(coco_run / "best.pt") / "eval.json"
    assert json.loads(record.read_text())["checkpoint"] == str(coco_run / "best.pt")
    assert row["epoch"] == 1


def _bad_inputs(demo: Path, tmp: Path) -> dict[str, tuple[list[str], str]]:
    coco, bsds = demo / "coco" / "demo_coco_deepo2p", demo / "bsds" / "demo_bsds_deepncut"
    image = str(demo / "data" / VAL_IMAGE)
    garbage = tmp / "garbage.jpg"
    garbage.write_bytes(b"not a jpeg")
    empty = tmp / "no_weights"
    empty.mkdir()
    shutil.copy(coco / "config.yaml", empty / "config.yaml")
    c = ["--run", str(coco), "--images"]
    return {
        "missing image": ([*c, str(tmp / "nope.jpg")], f"image not found: {tmp / 'nope.jpg'}"),
        "unreadable image": ([*c, str(garbage)], f"cannot decode image {garbage}"),
        "box outside": ([*c, image, "--box", "30,30,40,10"], f"box 30,30,40,10 is outside image {image} (64x64"),
        "degenerate box": ([*c, image, "--box", "1,1,0.5,10"], "box 1,1,0.5,10 of"),
        "bad box": ([*c, image, "--box", "1,2,3"], "--box '1,2,3': expected x,y,w,h"),
        "no weights": (["--run", str(empty), "--images", image], f"run folder {empty} holds no weights"),
        "no run": (["--run", str(tmp / "nothing"), "--images", image], "run folder not found"),
        "bsds image": (["--run", str(bsds), "--images", str(garbage), "--out", str(tmp / "o")], str(garbage)),
        "weights of another model": (
            ["--checkpoint", str(bsds / "best.pt"), "--config", str(coco / "config.yaml"), "--images", image],
            f"checkpoint {bsds / 'best.pt'} does not fit the configured model",
        ),
    }  # fmt: skip


def test_bad_input_is_exit_2_with_one_line(demo, tmp_path, capsys):
    for case, (argv, needle) in _bad_inputs(demo, tmp_path).items():
        assert main(argv) == 2, case
        err = capsys.readouterr().err.strip().splitlines()
        assert err[-1].startswith("error: ") and needle in err[-1], (case, err)
        assert not any(line.startswith("error") for line in err[:-1]), case


def test_cli_exit_2_without_traceback(demo, tmp_path):
    argv = ["--run", str(demo / "coco" / "demo_coco_deepo2p"), "--images", str(tmp_path / "x.jpg")]
    proc = subprocess.run(
        [sys.executable, "-m", "matbackprop.predict", *argv],
        cwd=ROOT,
        env={**os.environ, "WANDB_MODE": "disabled", "PYTHONPATH": str(ROOT / "src")},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr == f"error: image not found: {tmp_path / 'x.jpg'}\n"
