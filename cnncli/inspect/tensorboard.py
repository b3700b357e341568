"""TensorBoard event files for a run, written by a reporter (``Callbacks``) through tensorboardX
(the ``[tensorboard]`` extra; TensorFlow is not needed).

Per epoch: train/val loss and accuracy and the learning rate as scalars, a histogram of every
parameter and of its gradient (the epoch's last batch), and the first conv layer's kernels as
an image (the picture ``cnncli show --filters`` draws). Files go to ``RUN_DIR/tensorboard/``;
``tensorboard --logdir runs`` then shows every run under its folder name.
"""

from __future__ import annotations

from pathlib import Path

from cnncli.errors import ConfigError
from cnncli.training.run_dir import TENSORBOARD_FOLDER
from cnncli.training.trainer import Callbacks

TENSORBOARD_HINT = "pip install 'cnncli[tensorboard]'"
#: metrics.csv column -> TensorBoard scalar tag.
SCALAR_TAGS = {"train_loss": "loss/train", "val_loss": "loss/val",
               "train_accuracy": "accuracy/train", "val_accuracy": "accuracy/val", "lr": "lr"}


def summary_writer_class():
    """tensorboardX's SummaryWriter; a ConfigError naming the extra when it is missing."""
    try:
        from tensorboardX import SummaryWriter
    except ImportError:
        raise ConfigError("train.tensorboard needs the tensorboardX package",
                          key="tensorboard", hint=TENSORBOARD_HINT) from None
    return SummaryWriter


class TensorBoardReporter(Callbacks):
    """Writes a run's TensorBoard events; does nothing for a run whose config has
    ``train.tensorboard: false`` unless ``always``."""

    def __init__(self, always: bool = False):
        self.always = always
        self.writer = None
        self.model = None

    def on_start(self, run) -> None:
        if not (self.always or run.config.train.tensorboard):
            return
        folder = Path(run.run_dir) / TENSORBOARD_FOLDER
        if run.start_epoch == 0 and folder.is_dir():   # a new run: not the old run's curves
            for old in folder.glob("events.out.tfevents.*"):
                old.unlink()
        # tensorboardX names files by the second and host: a quick resume needs its own name.
        self.writer = summary_writer_class()(logdir=str(folder),
                                             filename_suffix=f".from-epoch-{run.start_epoch}")
        self.model = run.model

    def on_epoch_end(self, row, improved) -> None:
        if self.writer is None:
            return
        epoch = int(row["epoch"])
        for column, tag in SCALAR_TAGS.items():
            if row.get(column) is not None:
                self.writer.add_scalar(tag, float(row[column]), epoch)
        for name, value, grad in self.model.parameters():
            self.writer.add_histogram(f"weights/{name}", value, epoch)
            if grad is not None:
                self.writer.add_histogram(f"gradients/{name}", grad, epoch)
        image = first_filters(self.model)
        if image is not None:
            self.writer.add_image(f"filters/{image[0]}", image[1], epoch, dataformats="HWC")
        self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


def first_filters(model):
    """(layer name, RGB image) of the first conv layer's kernels, or None without one."""
    from cnncli.inspect.views import filters_view

    try:
        _, image, name = filters_view(model)
    except ConfigError:      # no conv layer
        return None
    return name, image
