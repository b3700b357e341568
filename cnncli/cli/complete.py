"""Shell completion of the arguments Click cannot guess: config files and run directories.

Enable it with Click's own script, e.g. for bash: ``eval "$(_CNNCLI_COMPLETE=bash_source
cnncli)"``. Commands and options complete by themselves; these complete the CONFIG and RUN
arguments from the files there are.
"""

from __future__ import annotations

from pathlib import Path

from click.shell_completion import CompletionItem

CONFIG_SUFFIXES = (".yaml", ".yml")
RUN_FILES = ("last.npz", "best.npz", "metrics.csv")


def _candidates(incomplete: str):
    """(path, text) of every entry of the folder ``incomplete`` is typing in that it starts;
    hidden entries only when asked for with a leading dot."""
    head, sep, start = incomplete.rpartition("/")
    prefix = head + sep                       # "", "runs/" or "/"
    try:
        entries = sorted(Path(prefix or ".").iterdir())
    except OSError:
        return
    for entry in entries:
        if entry.name.startswith(start) and (start.startswith(".")
                                             or not entry.name.startswith(".")):
            yield entry, prefix + entry.name


def _is_run(path: Path) -> bool:
    return any((path / name).exists() for name in RUN_FILES)


def complete_config(ctx, param, incomplete: str) -> list[CompletionItem]:
    """YAML files, and folders to look in."""
    out = []
    for path, text in _candidates(incomplete):
        if path.is_dir():
            out.append(CompletionItem(text + "/"))
        elif path.suffix.lower() in CONFIG_SUFFIXES:
            out.append(CompletionItem(text))
    return out


def complete_checkpoint_or_config(ctx, param, incomplete: str) -> list[CompletionItem]:
    """YAML files, checkpoints and run directories, and folders to look in (a run directory
    once, as itself)."""
    runs = {item.value for item in complete_run(ctx, param, incomplete)}
    configs = {item.value for item in complete_config(ctx, param, incomplete)
               if item.value.removesuffix("/") not in runs}
    return [CompletionItem(v) for v in sorted(runs | configs)]


def complete_run(ctx, param, incomplete: str) -> list[CompletionItem]:
    """Run directories (as themselves) and .npz checkpoints, and folders to look in."""
    out = []
    for path, text in _candidates(incomplete):
        if path.is_dir():
            out.append(CompletionItem(text if _is_run(path) else text + "/"))
        elif path.suffix.lower() == ".npz":
            out.append(CompletionItem(text))
    return out


def complete_folder(ctx, param, incomplete: str) -> list[CompletionItem]:
    """Folders (a folder of runs)."""
    return [CompletionItem(text + "/") for path, text in _candidates(incomplete)
            if path.is_dir()]
