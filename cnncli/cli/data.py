"""`cnncli data pack`: convert a dataset once into an npy_dir that training streams from disk."""

from __future__ import annotations

from pathlib import Path

import click

from cnncli.cli.app import main
from cnncli.errors import printable


@main.group("data")
def data_group():
    """Prepare datasets for training: `data pack` converts one once into an npy_dir that
    training reads memory-mapped (data.path: OUT).

    \b
    Examples:
      cnncli data pack my_images/ packed/ --channels 3 --size 32x32 --resize fit
    """


def _size(ctx, param, value):
    if value is None:
        return None
    try:
        height, width = (int(v) for v in value.lower().split("x"))
    except ValueError:
        raise click.BadParameter(f"{value!r} is not HxW, e.g. 32x32") from None
    if height < 1 or width < 1:
        raise click.BadParameter(f"{value!r}: both sizes must be positive")
    return height, width


@data_group.command("pack")
@click.argument("src", type=click.Path(exists=True, path_type=Path))
@click.argument("out", type=click.Path(file_okay=False, path_type=Path))
@click.option("--channels", type=click.Choice(["1", "3", "4"]), default="1", show_default=True,
              help="Channels images are converted to (image folders).")
@click.option("--size", callback=_size, metavar="HxW",
              help="Bring images to this size (image folders; default: the first image's).")
@click.option("--resize", type=click.Choice(["fit", "crop"]),
              help="How images of another size are brought to --size (default: refuse).")
@click.option("--threads", type=click.IntRange(min=1), default=2, show_default=True,
              help="Threads decoding images.")
def pack_command(src, out, channels, size, resize, threads):
    """Write SRC (an image folder, IDX files or an .npz) into the folder OUT as x_train.npy,
    y_train.npy, x_test.npy, y_test.npy and meta.json; point data.path at OUT to train on it
    memory-mapped, without loading it.

    \b
    Examples:
      cnncli data pack my_images/ packed/ --channels 3 --size 32x32 --resize fit
      cnncli data pack data/digits.npz packed_digits/
    """
    from cnncli.data.pack import pack_dataset

    written = pack_dataset(src, out, channels=int(channels), size=size, resize=resize,
                           threads=threads)
    for key in ("x_train", "y_train", "x_test", "y_test"):
        if key in written:
            click.echo(printable(f"{out / (key + '.npy')}: {written[key]}"))
    if written.get("class_names"):
        click.echo(printable(f"classes: {', '.join(written['class_names'])}"))
