"""Shell completion: commands and options by Click, CONFIG and RUN arguments from the files."""

import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from cnncli.cli import main

DIGITS = Path(__file__).resolve().parent.parent / "configs" / "digits.yaml"


def complete(line: str, cwd: Path) -> list[str]:
    """What bash would be offered for ``line`` typed in ``cwd`` (the last word is being
    typed), through Click's own completion protocol."""
    words = line.split()
    index = len(words) if line.endswith(" ") else len(words) - 1
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(cwd)
        result = CliRunner().invoke(main, [], prog_name="cnncli",
                                    env={"_CNNCLI_COMPLETE": "bash_complete",
                                         "COMP_WORDS": line, "COMP_CWORD": str(index)})
    assert result.exit_code == 0, result.output
    return [item.split(",", 1)[1] for item in result.stdout.splitlines()]


@pytest.fixture
def tree(tmp_path):
    base = tmp_path / "project"
    (base / "runs" / "digits").mkdir(parents=True)
    (base / "runs" / "digits" / "last.npz").write_bytes(b"")
    (base / "runs" / "notes").mkdir()
    shutil.copy(DIGITS, base / "digits.yaml")
    (base / "data.npz").write_bytes(b"")
    (base / "readme.txt").write_text("")
    return base


def test_commands_and_options(tree):
    assert "train" in complete("cnncli tr", tree)
    assert set(complete("cnncli r", tree)) == {"runs", "report"}
    assert complete("cnncli train --re", tree) == ["--resume", "--reinit"]
    assert "--set" in complete("cnncli summary digits.yaml --", tree)


def test_config_arguments_offer_yaml_files_and_folders(tree):
    assert complete("cnncli train ", tree) == ["digits.yaml", "runs/"]
    assert complete("cnncli train d", tree) == ["digits.yaml"]


def test_run_arguments_offer_run_directories_and_checkpoints(tree):
    assert complete("cnncli report runs/", tree) == ["runs/digits", "runs/notes/"]
    assert complete("cnncli eval ", tree) == ["data.npz", "runs/"]
    assert complete("cnncli train --resume runs/d", tree) == ["runs/digits"]
    assert complete("cnncli plot runs/digits runs/", tree) == ["runs/digits", "runs/notes/"]
    assert complete("cnncli summary ", tree) == ["data.npz", "digits.yaml", "runs/"]
    assert complete("cnncli runs ", tree) == ["runs/"]


def test_summary_and_show_offer_a_run_directory_once_not_also_as_a_folder(tree):
    assert complete("cnncli summary runs/", tree) == ["runs/digits", "runs/notes/"]
    assert complete("cnncli show runs/", tree) == ["runs/digits", "runs/notes/"]
    assert complete("cnncli show d", tree) == ["data.npz", "digits.yaml"]
