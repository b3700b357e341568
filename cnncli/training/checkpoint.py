"""Checkpoints: one ``.npz`` (no pickle) holding weights, optimizer, RNG and run state.

Keys: ``format_version``, ``cnncli_version``, ``config`` (resolved YAML text),
``params/<layer>.<name>`` (every state_dict entry, PyTorch layout), ``optim/<...>``,
``epoch``, ``step``, ``rng_state`` (JSON), ``normalization/<key>``, ``class_names``,
``best_metric``, ``metrics`` (JSON list of per-epoch rows) and ``run_state`` (JSON).
Writes are atomic: temp file in the same directory, fsync, ``os.replace``, fsync the directory.
"""

from __future__ import annotations

import errno
import json
import os
import struct
import tempfile
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

from cnncli.errors import CheckpointError, CnncliError

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


def config_to_text(config: dict) -> str:
    return yaml.safe_dump(plain(config), sort_keys=False, default_flow_style=None, width=100)


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

    @property
    def config(self) -> dict:
        return yaml.safe_load(self.config_text)

    def model(self, dtype=np.float32, *, speedups: bool | None = None):
        """Build the model from the stored config and load the stored weights into it; it runs
        with cnncli's speed-ups unless ``speedups=False`` or CNNCLI_SPEEDUPS=off."""
        from cnncli.nn.model import model_from_entries
        from cnncli.parallel.plan import apply_plan

        self.check_finite()
        try:
            section = self.config["model"]
            model = model_from_entries(section["input_shape"], section["layers"], dtype=dtype,
                                       seed=int(self.config.get("seed") or 0))
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
        "config": np.array(config_to_text(config)),
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


def new_file_mode() -> int:
    """The mode ``open()`` would give a new file (0o666 minus the umask); mkstemp uses 0o600."""
    umask = os.umask(0o022)
    os.umask(umask)
    return 0o666 & ~umask


def make_folder(folder: Path) -> None:
    """``mkdir -p``; a file in the way is named (mkdir alone says 'File exists')."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        blocker = next((p for p in (folder, *folder.parents) if p.is_file()), folder)
        raise NotADirectoryError(errno.ENOTDIR, f"{blocker} is a file, not a folder",
                                 str(folder)) from None


def atomic_write(path: Path, write) -> None:
    """Call ``write(file)`` on a temp file beside ``path``, then swap it in durably."""
    make_folder(path.parent)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(tmp, new_file_mode())
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    try:
        dir_fd = os.open(path.parent, os.O_RDONLY)
    except OSError:  # platforms without directory fds (Windows)
        return
    try:
        os.fsync(dir_fd)
    except OSError:
        pass
    finally:
        os.close(dir_fd)


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
    try:
        data = np.load(path, allow_pickle=False)
        if not isinstance(data, np.lib.npyio.NpzFile):
            raise CheckpointError(f"{path} is a single .npy array, not a cnncli checkpoint")
        with data:
            return {k: data[k] for k in data.files}
    except CheckpointError:
        raise
    except (OSError, ValueError, EOFError, KeyError, NotImplementedError, RuntimeError,
            struct.error, zipfile.BadZipFile, zlib.error) as err:
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
    return str(arrays[key]) if key in arrays else ""


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


def load_checkpoint(path) -> Checkpoint:
    """Read a checkpoint (or a run directory's last.npz); any problem becomes a one-line
    CheckpointError."""
    path = Path(path)
    if path.is_dir() and (path / "last.npz").exists():
        path = path / "last.npz"
    arrays = _read_all(path)
    if "format_version" not in arrays or "config" not in arrays:
        raise CheckpointError(f"{path} is not a cnncli checkpoint (no format_version/config)")
    version = _int(arrays, "format_version", path)
    if version > FORMAT_VERSION:
        raise CheckpointError(f"{path} has checkpoint format {version}, newer than this cnncli "
                              f"reads ({FORMAT_VERSION})", hint="upgrade cnncli")
    try:
        config_text = str(arrays["config"])
        config = yaml.safe_load(config_text)
        if not isinstance(config, dict) or "model" not in config:
            raise ValueError("config has no model section")
        rng_state = json.loads(_text(arrays, "rng_state", path) or "{}")
        metrics = json.loads(_text(arrays, "metrics", path) or "[]")
        run_state = json.loads(_text(arrays, "run_state", path) or "{}")
    except (ValueError, yaml.YAMLError) as err:
        raise CheckpointError(f"{path} has an unreadable config or state "
                              f"({str(err).splitlines()[0]})") from None
    normalization = {}
    for key, value in arrays.items():
        if key.startswith("normalization/"):
            normalization[key.split("/", 1)[1]] = str(value) if value.dtype.kind == "U" else value
    _check_normalization(normalization, path)
    best = arrays.get("best_metric", np.array(np.nan))
    if best.shape != () or best.dtype.kind != "f":
        raise CheckpointError(f"{path} is not a readable cnncli checkpoint (best_metric is "
                              f"{best.dtype} {best.shape}, expected one number)")
    best = float(best)
    return Checkpoint(
        path=path,
        config_text=config_text,
        state={k[len("params/"):]: v for k, v in arrays.items() if k.startswith("params/")},
        optimizer_state={k[len("optim/"):]: v for k, v in arrays.items()
                         if k.startswith("optim/")},
        epoch=_int(arrays, "epoch", path),
        step=_int(arrays, "step", path),
        rng_state=rng_state,
        normalization=normalization,
        class_names=[str(c) for c in arrays.get("class_names", np.array([], dtype=str))],
        best_metric=None if np.isnan(best) else best,
        metrics=metrics,
        run_state=run_state,
        cnncli_version=_text(arrays, "cnncli_version", path),
        format_version=version,
    )
