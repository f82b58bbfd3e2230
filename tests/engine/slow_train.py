"""``python -m matbackprop.train`` with every training step slowed by MATBACKPROP_TEST_STEP_S
seconds (default 0.05), so that signal / kill tests can land inside an epoch on any machine.
The sleep changes no number. Used by tests/engine/test_scale.py only."""

import os
import runpy
import time

import matbackprop.tasks.bsds as bsds
import matbackprop.tasks.coco as coco

DELAY = float(os.environ.get("MATBACKPROP_TEST_STEP_S", "0.05"))


def _slow(step):
    def slowed(self, model, batch):
        time.sleep(DELAY)
        return step(self, model, batch)

    return slowed


coco.CocoTask.train_step = _slow(coco.CocoTask.train_step)
bsds.BsdsTask.train_step = _slow(bsds.BsdsTask.train_step)

if __name__ == "__main__":  # as `python -m matbackprop.train` (Hydra finds conf/ from its file)
    runpy.run_module("matbackprop.train", run_name="__main__", alter_sys=True)
