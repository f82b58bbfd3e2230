#!/usr/bin/env python
"""The W&B dashboards' picture offline: ``table1.html`` / ``table2.html`` from the run folders.

    python scripts/tables_html.py --runs outputs --out outputs/tables   # also run by make tables

One self-contained HTML page per paper table, generated from the same panel specification as
the W&B views (``matbackprop.results.panels``); see ``matbackprop.results.html``.
"""

from matbackprop.results.html import main

if __name__ == "__main__":
    raise SystemExit(main())
