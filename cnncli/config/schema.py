"""The resolved config as typed, frozen dataclasses: every key, its check and its default, once.

Each field's metadata holds the rule that checks a value written in the file (``rule``) and the
text of docs/config.md's tables (``doc``; ``default_doc`` where the default is worked out from
other keys). ``cnncli.config.resolve`` turns parsed YAML into these objects; everything
downstream reads them, and ``to_dict()`` gives the plain resolved config that ``config.yaml`` and
checkpoints store.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from cnncli.checks import (
    check_bool,
    check_choice,
    check_int,
    check_number,
    check_string,
    describe_range,
)

DATASETS = ("digits", "mnist", "fashion-mnist", "cifar10")
OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("constant", "step", "multistep", "cosine", "exponential")
NORMALIZATIONS = ("scale", "standardize", "none")
LAYOUTS = ("NCHW", "NHWC")
DATA_FORMATS = ("auto", "npy_dir")
RESIZES = ("fit", "crop")
EARLY_STOPPING_METRICS = ("val_accuracy", "val_loss")
#: train.lr when the file leaves it out (or null), by optimizer: torch.optim's usual choices.
DEFAULT_LR = {"sgd": 0.01, "adam": 0.001, "adamw": 0.001}
#: train.weight_decay when left out: AdamW's own default decays, the others do not.
DEFAULT_WEIGHT_DECAY = {"sgd": 0.0, "adam": 0.0, "adamw": 0.01}


# ---------------------------------------------------------------- rules for one value

@dataclass(frozen=True)
class Rule:
    """How one key's value is checked, and how docs/config.md names its type."""

    check: Callable[[str, object], object]
    text: str

    def __call__(self, name: str, value):
        return self.check(name, value)


def _code(options) -> str:
    return " \\| ".join(f"`{o}`" for o in options)


def int_rule(low=None, high=None, *, null=False) -> Rule:
    return Rule(lambda n, v: check_int(n, v, low=low, high=high, null=null),
                f"int{describe_range(low, high)}" + (" or null" if null else ""))


def number_rule(low=None, high=None, *, low_open=False, high_open=False, null=False) -> Rule:
    rng = describe_range(low, high, low_open=low_open, high_open=high_open)
    return Rule(lambda n, v: check_number(n, v, low=low, high=high, low_open=low_open,
                                          high_open=high_open, null=null),
                f"number{rng}" + (" or null" if null else ""))


def choice_rule(options, *, null=False) -> Rule:
    return Rule(lambda n, v: check_choice(n, v, options, null=null),
                _code(options) + (" \\| null" if null else ""))


BOOL = Rule(check_bool, "bool")
STRING = Rule(check_string, "string")
STRING_OR_NULL = Rule(lambda n, v: check_string(n, v, null=True), "string or null")
POSITIVE_INT = int_rule(1)
BETA = number_rule(0, 1, high_open=True)


def setting(default, rule: Rule | None, doc: str, *, default_doc: str | None = None,
            type_doc: str | None = None):
    """A dataclass field with its check and its documentation."""
    meta = {"rule": rule, "doc": doc, "default_doc": default_doc, "type_doc": type_doc}
    if isinstance(default, (dict, list)) or dataclasses.is_dataclass(default):
        return field(default_factory=lambda: default, metadata=meta)
    return field(default=default, metadata=meta)


# ---------------------------------------------------------------- sections

@dataclass(frozen=True)
class AugmentConfig:
    random_crop: int = setting(0, int_rule(0, 4096), "zero-padding in pixels for a random crop "
                               "back to the input size; 0 = off")
    horizontal_flip: bool = setting(False, BOOL, "random left-right flips")

    @property
    def active(self) -> bool:
        return bool(self.random_crop or self.horizontal_flip)


@dataclass(frozen=True)
class DataConfig:
    dataset: str | None = setting(
        "digits", choice_rule(DATASETS, null=True), "a known dataset",
        default_doc="`digits` (null when `path` is given)")
    path: str | tuple[str, ...] | None = setting(
        None, None, "instead of `dataset`: an `.npz`, an IDX file pair/dir, or an image folder",
        type_doc="string, a pair of strings, or null")
    layout: str | None = setting(None, choice_rule(LAYOUTS, null=True),
                                 "layout of ambiguous `.npz` arrays", default_doc="`null` (infer)")
    val_split: float = setting(0.1, number_rule(0, 1, high_open=True),
                               "fraction of train held out (stratified, seeded); 0 = none")
    normalize: str = setting("scale", choice_rule(NORMALIZATIONS),
                             "scale to [0, 1], per-channel standardise, or leave")
    augment: AugmentConfig = setting(AugmentConfig(), None, "see the two keys below")
    cache_dir: str | None = setting(None, STRING_OR_NULL, "where downloads go; else "
                                    "`$CNNCLI_DATA`, else the user cache dir")
    format: str = setting("auto", choice_rule(DATA_FORMATS),
                          "how `path` is read: `auto` tells from the files; `npy_dir` is a "
                          "folder of x_train.npy, y_train.npy, ... (`cnncli data pack`), "
                          "memory-mapped")
    resize: str | None = setting(None, choice_rule(RESIZES, null=True),
                                 "images of another size than `input_shape`: stretch (`fit`), "
                                 "scale and centre-crop (`crop`), or refuse", default_doc="`null` "
                                 "(refuse)")
    loader_threads: int = setting(1, int_rule(1, 64), "threads decoding a streamed image "
                                  "folder; results do not depend on it")
    prefetch: int = setting(4, int_rule(1, 1024), "batches of a streamed dataset (image folder, "
                            "`npy_dir`) read ahead in the background")
    cache: bool = setting(False, BOOL, "an image folder's decoded images kept in the run "
                          "directory (`data_cache/`) by the first epoch and read from there "
                          "by later epochs and resumed runs")


@dataclass(frozen=True)
class ScheduleConfig:
    """``train.lr_schedule``: which keys apply depends on ``type`` (``KEYS``)."""

    type: str = setting("constant", choice_rule(SCHEDULES), "the schedule")
    step_size: int | None = setting(None, int_rule(1), "epochs between decays (step)")
    milestones: tuple[int, ...] | None = setting(None, None, "epochs of the decays (multistep)")
    gamma: float | None = setting(None, number_rule(0, low_open=True), "decay factor")
    eta_min: float | None = setting(None, number_rule(0), "the lowest lr (cosine)")
    warmup_epochs: int = setting(0, int_rule(0), "epochs of linear warm-up before the schedule")

    #: The keys each type takes, and their defaults (None: required).
    KEYS = {
        "constant": {},
        "step": {"step_size": None, "gamma": 0.1},
        "multistep": {"milestones": None, "gamma": 0.1},
        "exponential": {"gamma": None},
        "cosine": {"eta_min": 0.0},
    }

    def to_dict(self) -> dict:
        out = {"type": self.type}
        for key in ("step_size", "milestones", "gamma", "eta_min"):
            value = getattr(self, key)
            if value is not None:
                out[key] = list(value) if isinstance(value, tuple) else value
        out["warmup_epochs"] = self.warmup_epochs
        return out


@dataclass(frozen=True)
class EarlyStoppingConfig:
    patience: int = setting(5, int_rule(1), "epochs without improvement before stopping")
    metric: str = setting("val_accuracy", choice_rule(EARLY_STOPPING_METRICS),
                          "the metric watched")
    min_delta: float = setting(0.0, number_rule(0), "smallest change that counts as better")

    @property
    def higher_is_better(self) -> bool:
        return self.metric == "val_accuracy"


@dataclass(frozen=True)
class InitFromConfig:
    """``train.init_from``: the weights a run started from (``cnncli train --init-from``)."""

    source: str = setting(None, STRING, "a checkpoint, run directory or .safetensors file")
    freeze: tuple[str, ...] = setting((), None, "layers that get no updates")
    reinit: tuple[str, ...] = setting((), None, "layers initialised afresh, not loaded")


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = setting(10, int_rule(1, 1_000_000), "passes over the training set")
    batch_size: int = setting(64, int_rule(1, 1_000_000), "samples per step")
    optimizer: str = setting("sgd", choice_rule(OPTIMIZERS), "the update rule (torch.optim's)")
    lr: float = setting(None, number_rule(0, low_open=True, null=True), "learning rate",
                        default_doc="null → `0.01` for sgd, `0.001` for adam/adamw (resolved)")
    momentum: float = setting(0.0, number_rule(0, 1, high_open=True), "sgd only")
    nesterov: bool = setting(False, BOOL, "sgd with momentum > 0 only")
    weight_decay: float = setting(
        None, number_rule(0, null=True), "sgd/adam: L2 added to the gradient; adamw: decoupled",
        default_doc="null → `0.01` for adamw, `0.0` otherwise (resolved)")
    betas: tuple[float, float] = setting((0.9, 0.999), None, "adam/adamw",
                                         type_doc="`[b1, b2]`, each in [0, 1)")
    eps: float = setting(1.0e-8, number_rule(0, low_open=True), "adam/adamw",
                         default_doc="`1.0e-8`")
    lr_schedule: ScheduleConfig = setting(ScheduleConfig(), None, "per-epoch schedule, see below",
                                          type_doc="a type name or a mapping",
                                          default_doc="`constant`")
    grad_clip_norm: float | None = setting(None, number_rule(0, low_open=True, null=True),
                                           "clip the global gradient norm")
    early_stopping: EarlyStoppingConfig | None = setting(
        None, None, "`{patience: 5, metric: val_accuracy, min_delta: 0.0}` (missing keys get "
        "these defaults; metric `val_accuracy` or `val_loss`)", type_doc="mapping or null")
    label_smoothing: float = setting(0.0, number_rule(0, 1, high_open=True),
                                     "as torch.nn.CrossEntropyLoss")
    init_from: InitFromConfig | None = setting(
        None, None, "the weights the run started from (`cnncli train --init-from`): "
        "`{source: PATH, freeze: [layer, ...], reinit: [layer, ...]}`; frozen layers get no "
        "updates", type_doc="mapping or null")
    tensorboard: bool = setting(False, BOOL, "write TensorBoard event files into the run "
                                "directory (the `[tensorboard]` extra; same as `--tensorboard`)")


@dataclass(frozen=True)
class LayerSpec:
    """One resolved layer entry: canonical type, optional name, every hyperparameter."""

    type: str
    name: str | None
    params: Mapping[str, object]
    activation: str | None = None
    #: What the layer reads: absolute indices of earlier entries or "input"; None: the entry
    #: before it (or the input, for the first).
    inputs: tuple | None = None

    def to_dict(self, index: int | None = None) -> dict:
        """The entry; with its position ``index``, ``from`` is written relative (-1 the entry
        before), as a config file spells it, else with absolute indices."""
        out = {"type": self.type}
        if self.name is not None:
            out["name"] = self.name
        if self.inputs is not None:
            out["from"] = [ref if ref == "input" or index is None else ref - index
                           for ref in self.inputs]
        out.update({k: plain(v) for k, v in self.params.items()})
        if self.activation is not None:
            out["activation"] = self.activation
        return out


@dataclass(frozen=True)
class ModelConfig:
    input_shape: tuple[int, ...]
    layers: tuple[LayerSpec, ...]

    def entries(self) -> list[dict]:
        """The layer entries as the layer registry builds them (``nn.model_from_entries``)."""
        return [layer.to_dict() for layer in self.layers]

    def written_entries(self) -> list[dict]:
        """The layer entries as a config file writes them (``from:`` relative)."""
        return [layer.to_dict(index) for index, layer in enumerate(self.layers)]


@dataclass(frozen=True)
class RunConfig:
    """A whole resolved config file."""

    name: str
    seed: int
    model: ModelConfig
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict:
        """The plain resolved config (what ``config.yaml`` and checkpoints hold)."""
        return {"name": self.name, "seed": self.seed,
                "model": {"input_shape": list(self.model.input_shape),
                          "layers": self.model.written_entries()},
                "data": _section_dict(self.data), "train": _section_dict(self.train)}

    def replace(self, **changes) -> RunConfig:
        """A copy with whole sections or top-level keys replaced (``dataclasses.replace``)."""
        return dataclasses.replace(self, **changes)


SEED_RULE = int_rule(0, 2**32 - 1)
TOP_LEVEL_DOC = {
    "name": ("string of letters, digits, `.`, `_`, `-`", "the file name without `.yaml`",
             "run name, the `runs/<name>/` folder"),
    "seed": (SEED_RULE.text, "`0`", "one seed for weights, shuffling, validation split, "
             "dropout, augmentation"),
    "model": ("mapping", "required", "the network"),
    "data": ("mapping", "see below", "where the images come from"),
    "train": ("mapping", "see below", "optimisation settings"),
}


def frozen_mapping(values: dict) -> Mapping:
    return MappingProxyType(dict(values))


def plain(value):
    if isinstance(value, Mapping):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value


def _section_dict(section) -> dict:
    out = {}
    for f in dataclasses.fields(section):
        value = getattr(section, f.name)
        if isinstance(value, ScheduleConfig):
            value = value.to_dict()
        elif dataclasses.is_dataclass(value):
            value = _section_dict(value)
        out[f.name] = plain(value)
    return out
