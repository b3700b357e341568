"""Checkpoints: one ``.npz`` (no pickle) holding weights, optimizer, RNG and run state.

Keys: ``format_version``, ``cnncli_version``, ``config`` (resolved YAML text),
``params/<layer>.<name>`` (every state_dict entry, PyTorch layout), ``optim/<...>``,
``epoch``, ``step``, ``rng_state`` (JSON), ``normalization/<key>``, ``class_names``,
``best_metric``, ``metrics`` (JSON list of per-epoch rows) and ``run_state`` (JSON).
Writes are atomic: temp file in the same directory, fsync, ``os.replace``, fsync the directory.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

from cnncli import arrayfiles
from cnncli.config import RunConfig, check_data, dump_config
from cnncli.errors import CheckpointError, CnncliError
from cnncli.files import atomic_write

FORMAT_VERSION = 1


def plain(obj):
    """Tuples -> lists and NumPy scalars -> Python, recursively, so YAML/JSON can dump it."""
    if isinstance(obj, dict):
        return {str(k): plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [plain(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return plain(obj.tolist())
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


@dataclass
class Checkpoint:
    """A loaded checkpoint; ``model()`` rebuilds the network with its weights."""

    path: Path
    config_text: str
    state: dict[str, np.ndarray]
    optimizer_state: dict[str, np.ndarray]
    epoch: int
    step: int
    rng_state: dict
    normalization: dict
    class_names: list[str]
    best_metric: float | None
    metrics: list[dict]
    run_state: dict = field(default_factory=dict)
    cnncli_version: str = ""
    format_version: int = FORMAT_VERSION
    _run: RunConfig | None = field(default=None, repr=False, compare=False)

    @property
    def config(self) -> dict:
        return yaml.safe_load(self.config_text)

    @property
    def run(self) -> RunConfig:
        """The stored config, checked and resolved like a config file."""
        if self._run is None:
            try:
                self._run = check_data(self.config, file=str(self.path)).run
            except CnncliError as err:
                raise CheckpointError(f"{self.path} holds an unusable config: "
                                      f"{err.message}", layer=err.layer, hint=err.hint) from None
            except (yaml.YAMLError, RecursionError) as err:
                raise CheckpointError(f"{self.path} holds an unreadable config "
                                      f"({type(err).__name__})") from None
        return self._run

    def model(self, dtype=np.float32, *, speedups: bool | None = None):
        """Build the model from the stored config and load the stored weights into it; it runs
        with cnncli's speed-ups unless ``speedups=False`` or CNNCLI_SPEEDUPS=off."""
        from cnncli.nn.model import model_from_entries
        from cnncli.parallel.plan import apply_plan

        self.check_finite()
        run = self.run
        try:
            model = model_from_entries(run.model.input_shape, run.model.entries(), dtype=dtype,
                                       seed=run.seed)
            model.load_state_dict(self.state)
        except CnncliError as err:
            raise CheckpointError(f"{self.path}: {err}") from None
        except (KeyError, TypeError, ValueError) as err:  # a foreign or hand-edited config
            raise CheckpointError(f"{self.path} has an unusable model config "
                                  f"({type(err).__name__}: {err})") from None
        return apply_plan(model, speedups=speedups)  # outside: a bad switch is not the file's

    def check_finite(self) -> None:
        """Weights with NaN or inf (a diverged or damaged file) would give NaN answers."""
        for key, value in self.state.items():
            if value.dtype.kind in "fc" and not np.isfinite(value).all():
                raise CheckpointError(f"{self.path}: {key} holds NaN or infinite values (a "
                                      "diverged or damaged checkpoint)",
                                      hint="use an earlier checkpoint, or retrain with a lower "
                                           "train.lr or with train.grad_clip_norm")


def save_checkpoint(path, *, config: dict, model_state: dict, optimizer_state: dict | None = None,
                    epoch: int = 0, step: int = 0, rng_state: dict | None = None,
                    normalization: dict | None = None, class_names=(),
                    best_metric: float | None = None, metrics: list | None = None,
                    run_state: dict | None = None) -> Path:
    """Write a checkpoint atomically: a crash at any moment leaves the previous file intact."""
    from cnncli import __version__

    arrays: dict[str, np.ndarray] = {
        "format_version": np.array(FORMAT_VERSION, dtype=np.int64),
        "cnncli_version": np.array(__version__),
        "config": np.array(dump_config(plain(config))),
        "epoch": np.array(int(epoch), dtype=np.int64),
        "step": np.array(int(step), dtype=np.int64),
        "rng_state": np.array(json.dumps(plain(rng_state or {}))),
        "class_names": np.array([str(c) for c in class_names], dtype=str),
        "best_metric": np.array(np.nan if best_metric is None else float(best_metric)),
        "metrics": np.array(json.dumps(plain(metrics or []))),
        "run_state": np.array(json.dumps(plain(run_state or {}))),
    }
    for key, value in model_state.items():
        arrays[f"params/{key}"] = np.asarray(value)
    for key, value in (optimizer_state or {}).items():
        arrays[f"optim/{key}"] = np.asarray(value)
    for key, value in (normalization or {}).items():
        arrays[f"normalization/{key}"] = np.asarray(value)
    path = Path(path)
    atomic_write(path, lambda f: np.savez(f, **arrays))
    return path


def _read_all(path: Path) -> dict[str, np.ndarray]:
    if not path.exists():
        raise CheckpointError(f"no checkpoint at {path}",
                              hint="pass a .npz written by 'cnncli train' or its run directory")
    if path.is_dir():
        raise CheckpointError(f"{path} is a directory, not a checkpoint file",
                              hint=f"did you mean {path / 'last.npz'}?")
    try:
        with open(path, "rb") as f:
            magic = f.read(6)
    except OSError as err:
        raise CheckpointError(f"cannot read {path}: {err.strerror}") from None
    if not magic.startswith((b"PK", b"\x93NUMPY")):
        raise CheckpointError(f"{path} is not a cnncli checkpoint (not an .npz file)",
                              hint="pass a .npz written by 'cnncli train' or its run directory")
    if magic == b"\x93NUMPY":
        raise CheckpointError(f"{path} is a single .npy array, not a cnncli checkpoint")
    try:
        return arrayfiles.read_npz(path)
    except arrayfiles.CorruptArrayFile as err:
        raise CheckpointError(f"{path} is not a readable cnncli checkpoint ({err})",
                              hint="use another checkpoint, e.g. best.npz or last.npz") from None
    except arrayfiles.READ_ERRORS as err:
        raise CheckpointError(f"{path} is truncated or corrupt ({type(err).__name__}: "
                              f"{str(err).splitlines()[0] if str(err) else 'unreadable'})",
                              hint="use another checkpoint, e.g. best.npz or last.npz") from None


def _int(arrays, key, path) -> int:
    """A stored 0-d integer (0 if absent); anything else is a one-line CheckpointError."""
    value = arrays.get(key)
    if value is None:
        return 0
    if value.shape != () or value.dtype.kind not in "iu":
        raise CheckpointError(f"{path} is not a readable cnncli checkpoint ({key} is "
                              f"{value.dtype} {value.shape}, expected one integer)")
    return int(value)


def _text(arrays, key, path) -> str:
    """A stored 0-d string ("" if absent); anything else is a one-line CheckpointError."""
    value = arrays.get(key)
    if value is None:
        return ""
    if value.shape != () or value.dtype.kind != "U":
        raise _unreadable(path, f"{key} is {value.dtype} {value.shape}, expected a string")
    return str(value)


def _unreadable(path, problem: str) -> CheckpointError:
    return CheckpointError(f"{path} is not a readable cnncli checkpoint ({problem})",
                           hint="use another checkpoint, e.g. best.npz or last.npz")


def _json(arrays, key, path, default):
    try:
        return json.loads(_text(arrays, key, path) or default)
    except ValueError as err:
        raise _unreadable(path, f"{key} is not JSON: {err}") from None


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_count(value, least: int = 0) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= least


def _check_arrays(arrays: dict, path) -> None:
    """Weights and optimizer state: numbers, slots shaped as their parameter; ``optim/steps``
    a count (a negative one divides by zero in Adam's bias correction)."""
    for key, value in arrays.items():
        if key.startswith(("params/", "optim/")) and key not in ("optim/kind", "optim/steps") \
                and value.dtype.kind not in "biuf":
            raise _unreadable(path, f"{key} is {value.dtype}, expected numbers")
    optim = [k for k in arrays if k.startswith("optim/")]
    if not optim:
        return
    for key in ("optim/kind", "optim/steps"):
        if key not in arrays:
            raise _unreadable(path, f"{key} is missing beside the other optimizer state")
    _text(arrays, "optim/kind", path)
    if _int(arrays, "optim/steps", path) < 0:
        raise _unreadable(path, f"optim/steps is {int(arrays['optim/steps'])}, expected a "
                                "count >= 0")
    for key in optim:
        slot_param = key.split("/", 2)
        if len(slot_param) != 3:
            continue
        param = arrays.get(f"params/{slot_param[2]}")
        if param is None or param.shape != arrays[key].shape:
            raise _unreadable(path, f"{key} belongs to no stored parameter of its shape "
                                    f"{list(arrays[key].shape)}")


def _check_metadata(path, rng_state, metrics, run_state, class_names) -> None:
    """The JSON run state a resume relies on, checked field by field."""
    if not isinstance(rng_state, dict):
        raise _unreadable(path, "rng_state is not a mapping of generator states")
    for name, state in rng_state.items():
        try:
            np.random.PCG64().state = state
        except (TypeError, ValueError, KeyError) as err:
            raise _unreadable(path, f"rng_state[{name!r}] is not a generator state "
                                    f"({err})") from None
    if not isinstance(metrics, list):
        raise _unreadable(path, "metrics is not a list of per-epoch rows")
    for i, row in enumerate(metrics):
        if not isinstance(row, dict) or not _is_count(row.get("epoch"), 1):
            raise _unreadable(path, f"metrics row {i + 1} is not a mapping with an epoch >= 1")
        bad = next((k for k, v in row.items() if not (v is None or _is_number(v))), None)
        if bad is not None:
            raise _unreadable(path, f"metrics row {i + 1}: {bad} is {row[bad]!r}, expected a "
                                    "number or null")
    if not isinstance(run_state, dict):
        raise _unreadable(path, "run_state is not a mapping")
    checks = {"best_epoch": lambda v: v is None or _is_count(v, 1),
              "bad_epochs": _is_count,
              "best_loss": lambda v: v is None or _is_number(v),
              "early_best": lambda v: v is None or _is_number(v),
              "best_by": lambda v: v in ("val_accuracy", "train_accuracy")}
    for key, ok in checks.items():
        if key in run_state and not ok(run_state[key]):
            raise _unreadable(path, f"run_state {key} is {run_state[key]!r}")
    if class_names is not None and (class_names.ndim != 1 or class_names.dtype.kind != "U"):
        raise _unreadable(path, f"class_names is {class_names.dtype} {class_names.shape}, "
                                "expected a list of strings")


NORMALIZATION_MODES = ("none", "scale", "standardize")


def _check_normalization(norm: dict, path) -> None:
    """Stored statistics that are missing or malformed would silently rescale every input."""
    if not norm:
        return  # none stored: predict refuses, eval of the run's data fits them again
    mode = norm.get("mode")
    if mode not in NORMALIZATION_MODES:
        problem = (f"normalization/mode is {mode!r}, expected one of "
                   f"{', '.join(NORMALIZATION_MODES)}")
    else:
        needs = {"none": (), "scale": ("scale",), "standardize": ("scale", "mean", "std")}[mode]
        problem = next((f"normalization/{k} is missing for mode {mode}" for k in needs
                        if k not in norm), None)
    if problem is None and "scale" in norm:
        scale = norm["scale"]
        if scale.shape != () or scale.dtype.kind not in "iuf" or not np.isfinite(scale) or \
                scale <= 0:
            problem = f"normalization/scale is {scale.tolist()!r}, expected one positive number"
    if problem is None and mode == "standardize":
        mean, std = norm["mean"], norm["std"]
        if mean.ndim != 1 or mean.shape != std.shape or mean.dtype.kind != "f" or \
                std.dtype.kind != "f" or not (np.isfinite(mean).all() and np.isfinite(std).all()
                                              and (std > 0).all()):
            problem = ("normalization/mean and std must be finite per-channel vectors of one "
                       "length, std > 0")
    if problem is not None:
        raise CheckpointError(f"{path} is not a readable cnncli checkpoint ({problem})")


def is_checkpoint(path) -> bool:
    """A ``.npz`` checkpoint, or a run directory (which stands for its ``last.npz``)."""
    path = Path(path)
    return path.suffix.lower() == ".npz" or (path.is_dir() and (path / "last.npz").exists())


def _format_version(arrays, path) -> int:
    version = _int(arrays, "format_version", path)
    if version < 1:
        raise _unreadable(path, f"format_version is {version}")
    if version > FORMAT_VERSION:
        raise CheckpointError(f"{path} has checkpoint format {version}, newer than this cnncli "
                              f"reads ({FORMAT_VERSION})", hint="upgrade cnncli")
    return version


def _config_text(arrays, path) -> str:
    """The stored resolved config's YAML (checked to parse and to hold a model section)."""
    try:
        text = _text(arrays, "config", path)
        config = yaml.safe_load(text)
        if not isinstance(config, dict) or "model" not in config:
            raise ValueError("config has no model section")
    except (ValueError, yaml.YAMLError) as err:
        raise CheckpointError(f"{path} has an unreadable config or state "
                              f"({str(err).splitlines()[0]})") from None
    return text


def _best_metric(arrays, path) -> float | None:
    best = arrays.get("best_metric", np.array(np.nan))
    if best.shape != () or best.dtype.kind != "f":
        raise CheckpointError(f"{path} is not a readable cnncli checkpoint (best_metric is "
                              f"{best.dtype} {best.shape}, expected one number)")
    return None if np.isnan(best) else float(best)


def load_checkpoint(path) -> Checkpoint:
    """Read a checkpoint (or a run directory's last.npz); any problem becomes a one-line
    CheckpointError."""
    path = Path(path)
    if path.is_dir() and (path / "last.npz").exists():
        path = path / "last.npz"
    arrays = _read_all(path)
    if "format_version" not in arrays or "config" not in arrays:
        raise CheckpointError(f"{path} is not a cnncli checkpoint (no format_version/config)")
    version = _format_version(arrays, path)
    config_text = _config_text(arrays, path)
    rng_state = _json(arrays, "rng_state", path, "{}")
    metrics = _json(arrays, "metrics", path, "[]")
    run_state = _json(arrays, "run_state", path, "{}")
    _check_metadata(path, rng_state, metrics, run_state, arrays.get("class_names"))
    _check_arrays(arrays, path)
    epoch, step = _int(arrays, "epoch", path), _int(arrays, "step", path)
    if epoch < 0 or step < 0:
        raise _unreadable(path, f"epoch {epoch} and step {step} must be counts >= 0")
    normalization = {key.split("/", 1)[1]: str(value) if value.dtype.kind == "U" else value
                     for key, value in arrays.items() if key.startswith("normalization/")}
    _check_normalization(normalization, path)
    best = _best_metric(arrays, path)
    return Checkpoint(
        path=path,
        config_text=config_text,
        state={k[len("params/"):]: v for k, v in arrays.items() if k.startswith("params/")},
        optimizer_state={k[len("optim/"):]: v for k, v in arrays.items()
                         if k.startswith("optim/")},
        epoch=epoch,
        step=step,
        rng_state=rng_state,
        normalization=normalization,
        class_names=[str(c) for c in arrays.get("class_names", np.array([], dtype=str))],
        best_metric=best,
        metrics=metrics,
        run_state=run_state,
        cnncli_version=_text(arrays, "cnncli_version", path),
        format_version=version,
    )
