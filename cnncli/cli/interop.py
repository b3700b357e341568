"""`cnncli export` and `cnncli import`: models leave cnncli and come back."""

from __future__ import annotations

from pathlib import Path

import click

from cnncli.cli.app import main
from cnncli.errors import CnncliError


def _writing(what, action):
    """Run a write; an OSError (disk full, a file in the way) is the one-line error."""
    try:
        return action()
    except OSError as err:
        raise CnncliError(f"cannot write {err.filename or what}: {err.strerror or err}") \
            from None


@main.command("export")
@click.argument("source", metavar="RUN_DIR_OR_CKPT", type=click.Path(path_type=Path))
@click.option("--format", "fmt", required=True,
              type=click.Choice(["onnx", "safetensors", "pytorch"]),
              help="onnx: one .onnx file; safetensors: the state_dict; pytorch: a folder with "
                   "model.py and model.safetensors.")
@click.option("-o", "--output", "out", type=click.Path(path_type=Path),
              help="Where to write (default: beside the checkpoint, e.g. runs/x/last.onnx).")
@click.option("--opset", type=int, help="ONNX opset to target (default 20).")
@click.option("--no-normalization", is_flag=True,
              help="Leave the training normalisation out: the model then takes normalised "
                   "input.")
def export_command(source, fmt, out, opset, no_normalization):
    """Write a trained model as ONNX, safetensors or a PyTorch module.

    \b
    Examples:
      cnncli export runs/digits/best.npz --format onnx
      cnncli export runs/digits --format safetensors -o digits.safetensors
      cnncli export runs/digits/best.npz --format pytorch -o digits_torch
    """
    from cnncli.interop.export import export

    written = _writing(out, lambda: export(source, fmt, out, opset=opset,
                                           normalization=not no_normalization))
    click.echo(f"wrote {written}")


@main.command("import")
@click.argument("model", metavar="MODEL.onnx", type=click.Path(path_type=Path))
@click.option("-o", "--output", "out", type=click.Path(file_okay=False, path_type=Path),
              help="Folder for config.yaml and last.npz (default: runs/<model name>/).")
def import_command(model, out):
    """Turn an ONNX classifier into a cnncli config and checkpoint.

    \b
    Examples:
      cnncli import model.onnx
      cnncli import model.onnx -o runs/imported
    """
    from cnncli.interop.common import require

    require("onnx", "onnx")
    from cnncli.interop.onnx_import import import_onnx

    out = out if out is not None else Path("runs") / model.stem
    done = _writing(out, lambda: import_onnx(model, out))
    click.echo(f"imported {done.layers} layers -> {done.config_path}, {done.checkpoint_path}")
