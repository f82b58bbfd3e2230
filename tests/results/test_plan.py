"""The reproduction plan: steps per epoch from the sizes, and the hook a --time-steps fills in."""

from pathlib import Path

from matbackprop.results.plan import RowPlan, plan_lines, steps_per_epoch


def test_steps_per_epoch_follow_the_tasks_batching():
    coco = {"task": "coco", "trainer": {"batch_size": 100}}
    assert steps_per_epoch(coco, 1050) == 10  # the last short batch is dropped
    assert steps_per_epoch(coco, 60) == 1  # ... unless it is the only one
    bsds = {"task": "bsds", "trainer": {"batch_size": 4, "max_steps": None}}
    assert steps_per_epoch(bsds, 10) == 3
    capped = {"task": "coco", "trainer": {"batch_size": 10, "max_steps": 5}}
    assert steps_per_epoch(capped, 1000) == 5


def test_a_measured_step_time_gives_the_wall_time():
    plan = RowPlan("table1_x", "matbackprop.train", ["py", "-m", "x"], Path("o"), 1000, 10, 3)
    plan.step_s = 1.2  # what --time-steps N measures
    lines = plan_lines([plan])
    assert "10 steps/epoch x 3 epochs = 30 steps" in lines[3]
    assert lines[3].endswith("~1 min at 1.2 s/step")
    plan.step_s = 900.0
    assert plan_lines([plan])[3].endswith("~7.5 h at 900 s/step")
    assert lines[-1] == "[plan] 1 rows; 30 training steps in the rows still to run"
