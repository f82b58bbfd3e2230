"""``python -m matbackprop.train`` with every training step slowed by MATBACKPROP_TEST_STEP_S
seconds (default 0.05), so that signal / kill tests can land inside an epoch on any machine.
The sleep changes no number. Used by tests/engine/test_scale.py only.

Synchronisation for signal tests, by the step or evaluation item count of this process:

- ``MATBACKPROP_TEST_PAUSE_AT_STEP=N``: the N-th training step prints ``[slow_train] paused
  at step N`` and then waits (up to 120 s) until the run has received its stop signal, so the
  signal is guaranteed to land inside that step, whatever the machine's load;
- ``MATBACKPROP_TEST_PAUSE_AT_EVAL=N``: the same at the N-th evaluation item (COCO: batch,
  BSDS: image), printing ``[slow_train] paused at evaluation item N``.
"""

import os
import runpy
import time

import matbackprop.engine.preemption as preemption
import matbackprop.tasks.bsds as bsds
import matbackprop.tasks.coco as coco

DELAY = float(os.environ.get("MATBACKPROP_TEST_STEP_S", "0.05"))
PAUSE_AT_STEP = int(os.environ.get("MATBACKPROP_TEST_PAUSE_AT_STEP", "0"))
PAUSE_AT_EVAL = int(os.environ.get("MATBACKPROP_TEST_PAUSE_AT_EVAL", "0"))
_count = {"step": 0, "eval": 0}


def _pause(what: str, n: int) -> None:
    print(f"[slow_train] paused at {what} {n}", flush=True)
    t0 = time.time()
    while preemption.stop_requested() is None and time.time() - t0 < 120:
        time.sleep(0.01)


def _slow(step):
    def slowed(self, model, batch):
        time.sleep(DELAY)
        _count["step"] += 1
        if _count["step"] == PAUSE_AT_STEP:
            _pause("step", PAUSE_AT_STEP)
        return step(self, model, batch)

    return slowed


_real_poll = preemption.poll_evaluation


def _poll_and_pause():
    _count["eval"] += 1
    if _count["eval"] == PAUSE_AT_EVAL:
        _pause("evaluation item", PAUSE_AT_EVAL)
    _real_poll()


coco.CocoTask.train_step = _slow(coco.CocoTask.train_step)
bsds.BsdsTask.train_step = _slow(bsds.BsdsTask.train_step)
coco.poll_evaluation = bsds.poll_evaluation = _poll_and_pause

if __name__ == "__main__":  # as `python -m matbackprop.train` (Hydra finds conf/ from its file)
    runpy.run_module("matbackprop.train", run_name="__main__", alter_sys=True)
