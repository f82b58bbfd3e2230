#!/usr/bin/env python
"""Every GPU figure of the project in one report: ``make gpu-report`` on a CUDA box.

    python scripts/gpu_report.py [--device cuda] [--out-dir outputs/bench] [--quick]
                                 [--only spectral training deepncut eigh loader steps]

A thin wrapper of :func:`matbackprop.bench.gpu_report.main` (its docstring lists the pieces).
Without CUDA it says so and exits 0.
"""

from matbackprop.bench.gpu_report import main

if __name__ == "__main__":
    raise SystemExit(main())
