"""`cnncli runs` (the runs under a folder, with the settings that differ) and `cnncli report`
(one HTML page about a run)."""

from __future__ import annotations

import json
from pathlib import Path

import click

from cnncli.cli.app import main, table_console
from cnncli.cli.complete import complete_folder, complete_run
from cnncli.inspect.runs import SORT_KEYS


@main.command("runs")
@click.argument("folder", required=False, default="runs", type=click.Path(path_type=Path),
                shell_complete=complete_folder)
@click.option("--sort", type=click.Choice(list(SORT_KEYS)), default="name", show_default=True,
              help="Order of the rows (accuracies, epochs and date: largest first).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def runs_command(folder, sort, as_json):
    """List the runs under FOLDER (default runs/): date, epochs, best val and test accuracy,
    parameters, training time, and the config settings that differ between them.

    \b
    Examples:
      cnncli runs
      cnncli runs runs/ --sort val_accuracy
      cnncli runs experiments/ --json
    """
    from cnncli.inspect.runs import differing_settings, list_runs, runs_table

    runs = list_runs(folder, sort)
    settings = differing_settings(runs)
    if as_json:
        click.echo(json.dumps({"folder": str(folder), "differing": settings,
                               "runs": [r.to_json(settings) for r in runs]}, indent=2))
        return
    for run in runs:
        if run.problem:
            click.echo(f"cnncli: warning: {run.path}: {run.problem}", err=True)
    if not runs:
        click.echo(f"no runs in {folder}")
        return
    table = runs_table(runs, settings)
    table_console(table).print(table)


@main.command("report")
@click.argument("run", type=click.Path(path_type=Path), shell_complete=complete_run)
@click.option("-o", "--out", type=click.Path(dir_okay=False, path_type=Path),
              help="HTML file to write (default: RUN/report.html).")
def report_command(run, out):
    """One self-contained HTML page about a run: config, layers, curves, metrics, confusion
    matrix, errors and first-layer filters (opens from disk, no network).

    \b
    Examples:
      cnncli report runs/digits
      cnncli report runs/digits -o digits.html
    """
    from cnncli.inspect.report import write_report

    click.echo(f"wrote {write_report(run, out)}")
