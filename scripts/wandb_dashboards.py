#!/usr/bin/env python
"""W&B dashboards as code: one saved workspace view per paper table.

    python scripts/wandb_dashboards.py [--entity E] [--project matbackprop]   # = make dashboards
    python scripts/wandb_dashboards.py --dry-run      # the views' definitions (JSON), no W&B

Needs ``wandb login`` and the runs uploaded (``make sync-wandb``); without them it stops with
exit 2 and says which. The views are generated from the one panel specification
(``matbackprop.results.panels``) that the offline HTML pages of ``make tables`` use too;
see ``matbackprop.results.wandb_views``.
"""

from matbackprop.results.wandb_views import main

if __name__ == "__main__":
    raise SystemExit(main())
