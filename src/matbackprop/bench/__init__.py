"""Benchmarks that time the real training step and return their figures as data.

- :mod:`.harness`: the one timing / CSV / device / precision helper;
- :mod:`.real_step`: an experiment's real step (``OptimStep`` + task) on synthetic data of its
  real input size;
- :mod:`.training`: DeepO2P vs AlexNet step (``scripts/bench_training.py``);
- :mod:`.deepncut`: DeepNCut images/s at 481×321 (``scripts/bench_deepncut.py``);
- :mod:`.scale`: DDP overhead and checkpoint cost (``scripts/bench_scale.py``);
- :mod:`.plan`: seconds per step of paper rows and wall-time estimates (``reproduce.py --time-steps``).
"""
