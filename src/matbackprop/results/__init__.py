"""The results layer: paper rows and numbers, tables, provenance, panels, HTML and W&B views.

- ``paper``: the paper's tables (rows, experiments, numbers, notes) and the data sets' sizes;
- ``provenance``: what a table reports for a run and the one-line provenance of a run;
- ``tables``: records, Markdown / CSV / curves and the ``make tables`` command;
- ``panels``: the one panel specification; ``html`` (offline pages, their matplotlib charts in
  ``charts``) and ``wandb_views`` (W&B workspaces) are generated from it;
- ``plan``: the reproduction plan of ``scripts/reproduce.py`` (rows, commands, steps).
"""
