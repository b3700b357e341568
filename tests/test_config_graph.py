"""Configs of branching models: from:, blocks with $params and repeat, scale, and the located
error of every mistake."""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
import pytest

from cnncli.config import check_config, check_data, check_text, dump_config
from cnncli.errors import ConfigError
from cnncli.nn.model import model_from_entries

RESNET = """\
name: res
model:
  input_shape: [1, 8, 8]
  blocks:
    basic:
      params: {channels: 4, stride: 1}
      layers:
        - {type: conv2d, name: conv1, out_channels: $channels, kernel_size: 3, padding: 1,
           stride: $stride, activation: relu}
        - {type: conv2d, name: conv2, out_channels: $channels, kernel_size: 3, padding: 1}
        - {type: add, name: sum, from: [-1, input], activation: relu}
  layers:
    - {type: conv2d, name: stem, out_channels: 4, kernel_size: 3, padding: 1, activation: relu}
    - {type: basic, name: stage1, repeat: 2}
    - {type: conv2d, name: proj, out_channels: 6, kernel_size: 1, from: stem}
    - {type: concat, from: [stage1, proj]}
    - {type: global_avg_pool2d}
    - {type: flatten}
    - {type: dense, units: 10}
"""


def written(text=RESNET, **replace):
    for old, new in replace.values():
        assert old in text, old
        text = text.replace(old, new)
    return text


def error_of(text, tmp_path) -> ConfigError:
    path = tmp_path / "net.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        check_config(path)
    return err.value


def test_blocks_expand_to_named_flat_entries():
    checked = check_text(RESNET)
    entries = checked.run.model.entries()
    names = [e.get("name") for e in entries]
    assert names[:7] == ["stem", "stage1.0.conv1", "stage1.0.conv2", "stage1.0.sum",
                         "stage1.1.conv1", "stage1.1.conv2", "stage1.1.sum"]
    # add reads conv2 and the block's input (the stem, then the first repeat's sum)
    assert entries[3]["from"] == [2, 0] and entries[6]["from"] == [5, 3]
    assert entries[7]["from"] == [0]              # proj reads the stem
    assert entries[8]["from"] == [6, 7]           # concat of stage1's output and proj
    assert "from" not in entries[1] and "from" not in entries[9]
    assert checked.shapes[-1] == (10,)
    model = model_from_entries((1, 8, 8), entries)
    assert "stage1.1.conv2.weight" in model.state_dict()
    assert model.output_shape == (10,)


def test_resolved_config_round_trips_with_relative_from():
    checked = check_text(RESNET)
    layers = checked.config["model"]["layers"]
    assert layers[3]["from"] == [-1, -3] and layers[7]["from"] == [-7]
    assert "blocks" not in checked.config["model"]
    again = check_text(dump_config(checked.run))
    assert again.config == checked.config
    assert again.run.model.entries() == checked.run.model.entries()
    assert check_data(checked.run).config == checked.config


def test_plain_chains_resolve_as_before():
    """A config without from:/blocks stays a chain: no from in its entries, each layer reads
    the one before."""
    configs = sorted(Path(__file__).parent.parent.joinpath("configs").glob("*.yaml"))
    chains = [check_config(path) for path in configs
              if "from:" not in path.read_text() and "blocks:" not in path.read_text()]
    assert chains
    for checked in chains:
        assert all("from" not in e for e in checked.config["model"]["layers"])
        assert checked.sources == [(k,) for k in range(len(checked.layers))]


def test_from_defaults_are_left_out():
    text = textwrap.dedent("""\
        model:
          input_shape: [2, 4, 4]
          layers:
            - {type: relu, from: input}
            - {type: flatten, from: -1}
            - {type: dense, units: 2}
        """)
    layers = check_text(text).config["model"]["layers"]
    assert all("from" not in layer for layer in layers)


def test_params_defaults_and_values_and_nested_blocks():
    text = textwrap.dedent("""\
        model:
          input_shape: [3, 8, 8]
          blocks:
            unit:
              params: [width]
              layers: [{type: conv2d, out_channels: $width, kernel_size: [1, 1]}]
            pair:
              params: {c: 2, k: 3}
              layers:
                - {type: unit, name: a, width: $c}
                - {type: conv2d, name: b, out_channels: $c, kernel_size: [$k, $k]}
          layers:
            - {type: pair, name: p, c: 5}
            - {type: flatten}
            - {type: dense, units: 3}
        """)
    entries = check_text(text).run.model.entries()
    assert [e.get("name") for e in entries[:2]] == ["p.a.0", "p.b"]
    assert entries[0]["out_channels"] == 5 and entries[1]["kernel_size"] == [3, 3]


def test_scale_multiplies_repeats_and_widths_but_not_the_classifier():
    text = written(scale=("  layers:\n    - {type: conv2d, name: stem",
                          "  scale: {depth: 1.4, width: 0.5}\n  layers:\n"
                          "    - {type: conv2d, name: stem"))
    checked = check_text(text)
    entries = checked.run.model.entries()
    names = [e.get("name") for e in entries]
    assert "stage1.2.conv1" in names and "stage1.3.conv1" not in names   # round(2 * 1.4) = 3
    assert entries[0]["out_channels"] == 2                              # round(4 * 0.5)
    assert entries[-1]["units"] == 10
    tiny = check_text(text.replace("width: 0.5", "width: 0.01").replace("depth: 1.4",
                                                                        "depth: 0.1"))
    assert tiny.run.model.entries()[0]["out_channels"] == 1
    assert sum(1 for e in tiny.run.model.entries() if e.get("type") == "add") == 1


def test_a_block_without_repeat_is_named_without_an_index():
    checked = check_text(RESNET.replace("name: stage1, repeat: 2", "name: stage1"))
    assert checked.run.model.entries()[1]["name"] == "stage1.conv1"


def test_unused_output_warns_at_the_layer():
    text = written(dead=("    - {type: global_avg_pool2d}",
                         "    - {type: relu, name: dead}\n"
                         "    - {type: global_avg_pool2d, from: -2}"))
    warnings = check_text(text, "net.yaml").warnings
    assert any("net.yaml:17:" in w and "'dead'" in w and "not used" in w for w in warnings)


@pytest.mark.parametrize(("old", "new", "where", "words"), [
    ("from: [-1, input]", "from: [-1, inptu]", ":11:", ["'inptu'", "did you mean 'input'"]),
    ("from: stem}", "from: concat_1}", ":15:", ["'concat_1'", "no layer before it"]),
    ("{type: concat, from: [stage1, proj]}", "{type: concat, from: [stage1, later]}\n"
     "    - {type: relu, name: later}", ":16:", ["'later'", "cycle"]),
    ("from: stem}", "from: proj}", ":15:", ["'proj'", "itself", "cycle"]),
    ("from: [-1, input]", "from: [-1, -4]", ":11:", ["-4", "before the start",
                                                      "block 'basic'"]),
    ("from: stem}", "from: 2}", ":15:", ["negative index"]),
    ("name: stage1, repeat: 2", "name: stage1, repeat: 0", ":14:", ["repeat", ">= 1"]),
    ("name: stage1, repeat: 2", "name: stage1, repeat: 2, chanels: 3", ":14:",
     ["no parameter 'chanels'", "did you mean 'channels'"]),
    ("params: {channels: 4, stride: 1}", "params: [channels, stride]", ":14:",
     ["needs the parameter 'channels'"]),
    ("out_channels: $channels, kernel_size: 3, padding: 1}",
     "out_channels: $chanels, kernel_size: 3, padding: 1}", ":10:",
     ["'$chanels'", "did you mean '$channels'"]),
    ("{type: global_avg_pool2d}", "{type: global_avg_pool2d, kernel_size: $k}", ":17:",
     ["outside any block"]),
    ("        - {type: conv2d, name: conv2", "        - {type: basic}\n"
     "        - {type: conv2d, name: conv2", ":10:", ["block 'basic' uses itself"]),
    ("name: stage1, repeat: 2", "name: stage1, repeat: 2, channels: 8", ":11:",
     ["[8, 8, 8] (from[0]) and [4, 8, 8] (from[1])", "stage1.0.sum",
      "project from[1] to 8 channels", "out_channels 8"]),
    ("stride: $stride, activation: relu}", "stride: 2, activation: relu}", ":11:",
     ["[4, 4, 4] (from[0]) and [4, 8, 8] (from[1])"]),
    ("{type: concat, from: [stage1, proj]}",
     "{type: max_pool2d, kernel_size: 2}\n    - {type: concat, from: [-1, proj]}", ":17:",
     ["concat", "spatial sizes", "[6, 4, 4] (from[0]) and [6, 8, 8] (from[1])"]),
    ("from: stem}", "from: [stem, stage1]}", ":15:", ["conv2d takes one input"]),
    ("  layers:\n    - {type: conv2d, name: stem", "  scale: {depth: 0}\n  layers:\n"
     "    - {type: conv2d, name: stem", ":12:", ["model.scale.depth", "> 0"]),
    ("    basic:\n", "    relu: {layers: [{type: relu}]}\n    basic:\n", ":5:",
     ["'relu' is a layer type"]),
])
def test_mistakes_get_located_errors(tmp_path, old, new, where, words):
    err = error_of(written(change=(old, new)), tmp_path)
    line = str(err)
    assert f"net.yaml{where}" in line, line
    for word in words:
        assert word in line, line
    assert "\n" not in line


def test_cli_exits_2_without_a_traceback(tmp_path):
    from click.testing import CliRunner

    from cnncli.cli.app import main

    path = tmp_path / "net.yaml"
    path.write_text(written(change=("from: [-1, input]", "from: [-1, inptu]")))
    result = CliRunner().invoke(main, ["summary", str(path)])
    assert result.exit_code == 2
    assert "Traceback" not in result.output
    assert "did you mean 'input'" in result.output


def test_graph_model_from_config_runs_forward():
    checked = check_text(RESNET)
    model = model_from_entries((1, 8, 8), checked.run.model.entries(), dtype=np.float64)
    out = model.forward(np.ones((2, 1, 8, 8)))
    assert out.shape == (2, 10) and np.isfinite(out).all()


# ---------------------------------------------------------------- summary of a branching model

INCEPTION = """\
model:
  input_shape: [3, 8, 8]
  layers:
    - {type: conv2d, name: a, out_channels: 4, kernel_size: 1}
    - {type: conv2d, name: b, out_channels: 4, kernel_size: 3, padding: 1, from: input}
    - {type: conv2d, name: c, out_channels: 4, kernel_size: 5, padding: 2, from: input}
    - {type: concat, name: cat, from: [a, b, c]}
    - {type: conv2d, name: d, out_channels: 12, kernel_size: 3, stride: 2, padding: 1,
       from: b}
    - {type: max_pool2d, name: p, kernel_size: 2, from: cat}
    - {type: add, name: sum, from: [d, p], activation: relu}
    - {type: flatten}
    - {type: dense, units: 3}
"""


def summary_json(text, tmp_path, *extra):
    from click.testing import CliRunner

    from cnncli.cli.app import main

    path = tmp_path / "net.yaml"
    path.write_text(text)
    result = CliRunner().invoke(main, ["summary", str(path), *extra])
    assert result.exit_code == 0, result.output
    return result.output


def test_summary_json_rows_name_their_inputs(tmp_path):
    import json

    rows = json.loads(summary_json(INCEPTION, tmp_path, "--json"))["layers"]
    by_name = {row["name"]: row for row in rows}
    assert by_name["a"]["from"] == ["input"] and by_name["c"]["from"] == ["input"]
    assert by_name["cat"]["from"] == ["a", "b", "c"]
    assert by_name["sum"]["from"] == ["d", "p"]
    assert by_name["cat"]["output_shape"] == [12, 8, 8]
    # receptive fields through branches: the largest over the paths (c's 5x5 through cat;
    # then the pool: 5 + 1 = 6; d's path is 3 + 2 = 5; the union is 6x6 with jump 2)
    assert by_name["cat"]["receptive_field"] == [5, 5]
    assert by_name["d"]["receptive_field"] == [5, 5] and by_name["d"]["jump"] == [2, 2]
    assert by_name["p"]["receptive_field"] == [6, 6]
    assert by_name["sum"]["receptive_field"] == [6, 6] and by_name["sum"]["jump"] == [2, 2]


def test_summary_table_has_a_from_column_only_when_the_model_branches(tmp_path):
    table = summary_json(INCEPTION, tmp_path)
    assert "from" in table and "a, b, c" in table
    chain = summary_json("model:\n  input_shape: [1, 4, 4]\n  layers:\n"
                         "    - {type: flatten}\n    - {type: dense, units: 2}\n", tmp_path)
    assert "from" not in chain
    markdown = summary_json(INCEPTION, tmp_path, "--format", "markdown")
    assert "| from |" in markdown and "| a, b, c |" in markdown
    # blank where a layer reads just the row above (a reads the input, relu_1 reads sum);
    # the rows that branch name their inputs
    rows = {line.split(" | ")[1]: line.split(" | ")[3] for line in markdown.splitlines()[3:]
            if line.startswith("| ")}
    assert rows["a"] == rows["relu_1"] == rows["flatten_1"] == ""
    assert rows["b"] == rows["c"] == "input" and rows["p"] == "cat" and rows["d"] == "b"
    csv = summary_json(INCEPTION, tmp_path, "--format", "csv")
    assert csv.splitlines()[0].endswith(",from") and '"a, b, c"' in csv
    assert csv.splitlines()[1].endswith(",input")   # the CSV lists every layer's inputs


def test_summary_graph_draws_lanes(tmp_path):
    lines = summary_json(INCEPTION, tmp_path, "--graph").splitlines()
    assert lines[0] == "● input  3x8x8"
    cat = next(line for line in lines if " cat  concat" in line)
    assert cat.endswith("<- a, b, c") and "12x8x8" in cat
    assert any(set(line.strip()) <= set("├─┐┘┬┴┼│ ") and "├" in line for line in lines)
    assert lines[-1].startswith("● dense_1  dense")
    chain = summary_json("model:\n  input_shape: [1, 4, 4]\n  layers:\n"
                         "    - {type: flatten}\n    - {type: dense, units: 2}\n", tmp_path,
                         "--graph")
    assert chain.splitlines() == ["● input  1x4x4", "● flatten_1  flatten  16",
                                  "● dense_1  dense  2"]
