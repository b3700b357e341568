"""Every command's --help shows examples, and every example's options exist."""

from __future__ import annotations

import shlex

import click
import pytest
from click.testing import CliRunner

from cnncli.cli import main

COMMANDS = sorted(main.commands)


def test_every_command_is_covered():
    assert set(COMMANDS) >= {"train", "eval", "predict", "summary", "config", "layers", "plot",
                             "show", "bench"}


@pytest.mark.parametrize("name", COMMANDS)
def test_every_commands_help_has_an_example_that_parses(name):
    result = CliRunner().invoke(main, [name, "--help"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    heading = next(i for i, line in enumerate(lines) if line.strip() in ("Example:", "Examples:"))
    examples = []
    for line in lines[heading + 1:]:
        if not line.strip().startswith("cnncli "):
            break
        examples.append(shlex.split(line.split(">")[0])[1:])
    assert examples and all(words[0] == name for words in examples), lines[heading:]
    command = main.commands[name]
    for words in examples:  # unknown options and missing values fail here; files need not exist
        ctx = click.Context(command, info_name=name)
        command.make_parser(ctx).parse_args(words[1:])
