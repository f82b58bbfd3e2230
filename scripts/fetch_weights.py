#!/usr/bin/env python
"""Pre-fetch the ImageNet weights the pretrained trunks use (cluster nodes often have no internet).

    python scripts/fetch_weights.py            # AlexNet + VGG-16 into $TORCH_HOME/hub/checkpoints
    python scripts/fetch_weights.py --check    # only say what is there (no download)

Uses torchvision's weights API (``AlexNet_Weights.IMAGENET1K_V1``,
``VGG16_Weights.IMAGENET1K_V1``): the files land where ``torchvision.models.alexnet(weights=...)``
looks for them, SHA-256-prefix checked. Run it once on a machine with internet and share
``$TORCH_HOME`` (default ``~/.cache/torch``) with the nodes. Exit 0 all present, 2 a download
failed or (``--check``) a file is missing.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import torchvision

WEIGHTS = {
    "alexnet": torchvision.models.AlexNet_Weights.IMAGENET1K_V1,
    "vgg16": torchvision.models.VGG16_Weights.IMAGENET1K_V1,
}


def target(weights) -> Path:
    """Where torchvision caches ``weights``."""
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(weights.url).name


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true", help="report only, download nothing")
    parser.add_argument("names", nargs="*", default=list(WEIGHTS), help="alexnet vgg16")
    args = parser.parse_args(argv)
    code = 0
    for name in args.names:
        if name not in WEIGHTS:
            print(f"error: unknown trunk {name!r}; choose from {sorted(WEIGHTS)}", file=sys.stderr)
            return 2
        w, path = WEIGHTS[name], target(WEIGHTS[name])
        if args.check:
            state = "present" if path.is_file() else "MISSING"
            print(f"[weights] {name}: {state} {path}")
            code = code or (0 if path.is_file() else 2)
            continue
        try:
            w.get_state_dict(progress=True, check_hash=True)
        except Exception as err:  # URLError, HTTPError, a truncated or corrupt file
            print(
                f"error: could not fetch {name} weights {w.url} -> {path}: {err}", file=sys.stderr
            )
            code = 2
            continue
        print(f"[weights] {name}: {path} ({path.stat().st_size / 2**20:.0f} MiB)")
    return code


if __name__ == "__main__":
    raise SystemExit(main())
