"""Fuzz: damaged checkpoints and data files (flipped and truncated bytes, in the raw file and
inside .npy members re-zipped with valid checksums) never give a traceback, an exit code other
than 0, 1 or 2, or a file outside the run directory. Deterministic under the default profile."""

import io
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from test_hardening_io import idx_bytes, run_cli, train_tiny

#: The profile's example count (25 by default, more with HYPOTHESIS_PROFILE=thorough).
FUZZ = settings()

#: Byte edits: (where, as a fraction of the length, new byte value), or a cut to a fraction.
EDITS = st.one_of(
    st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.integers(0, 255)), min_size=1,
             max_size=4).map(lambda flips: ("flip", flips)),
    st.floats(0, 1, exclude_max=True).map(lambda keep: ("cut", keep)))


def edited(blob: bytes, edit, low: int = 0) -> bytes:
    """``blob`` with ``edit`` applied; positions are drawn in blob[low:] (a header's end)."""
    kind, how = edit
    if kind == "cut":
        return blob[:int(len(blob) * how)]
    out = bytearray(blob)
    for where, value in how:
        out[low + int((len(blob) - low) * where)] = value
    return bytes(out)


def edited_member(blob: bytes, member: int, edit) -> bytes:
    """An .npz whose ``member``-th array is edited, re-zipped so the checksums still match."""
    with zipfile.ZipFile(io.BytesIO(blob)) as zf:
        members = [(info.filename, zf.read(info)) for info in zf.infolist()]
    name, data = members[member % len(members)]
    members[member % len(members)] = (name, edited(data, edit))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as zf:
        for name, data in members:
            zf.writestr(name, data)
    return out.getvalue()


def files_outside(root: Path, run_dir: Path) -> set:
    return {p for p in root.rglob("*") if p.is_file() and run_dir not in p.parents}


def assert_clean_run(root: Path, run_dir: Path, *args):
    before = files_outside(root, run_dir)
    result = run_cli(*args)
    assert result.exception is None or isinstance(result.exception, SystemExit), \
        (args, repr(result.exception))
    assert result.exit_code in (0, 1, 2), (args, result.output)
    assert "Traceback" not in result.output, (args, result.output)
    assert files_outside(root, run_dir) == before, args
    return result.exit_code


# ---------------------------------------------------------------- checkpoints

@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return train_tiny(tmp_path_factory.mktemp("fuzz_ckpt"))


def use_checkpoint(blob: bytes) -> list[int]:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        run_dir = root / "run"
        run_dir.mkdir()
        (run_dir / "last.npz").write_bytes(blob)
        return [assert_clean_run(root, run_dir, *command)
                for command in (["eval", run_dir / "last.npz"], ["summary", run_dir / "last.npz"],
                                ["train", "--resume", run_dir, "--epochs", "2", "-q"])]


def test_the_undamaged_files_are_used_without_error(checkpoint):
    """The fuzz tests below start from files that work (else they would test nothing)."""
    assert use_checkpoint(checkpoint.read_bytes()) == [0, 0, 0]
    assert write_npz(npz_bytes()) == 0
    assert write_idx(idx_files(), gz=False) == 0 and write_idx(idx_files(), gz=True) == 0
    if pytest.importorskip("PIL"):
        assert write_pngs(None, None) == 0


@FUZZ
@given(edit=EDITS, member=st.one_of(st.none(), st.integers(0, 40)))
def test_damaged_checkpoints_never_crash(checkpoint, edit, member):
    blob = checkpoint.read_bytes()
    use_checkpoint(edited(blob, edit) if member is None else edited_member(blob, member, edit))


# ---------------------------------------------------------------- data files

def train_on(root: Path, data_path: str):
    config = {"name": "f", "seed": 0,
              "model": {"input_shape": [1, 4, 4],
                        "layers": [{"type": "flatten"}, {"type": "dense", "units": 3}]},
              "data": {"path": str(root / data_path), "normalize": "scale", "val_split": 0.25},
              "train": {"epochs": 1, "batch_size": 4}}
    (root / "c.yaml").write_text(yaml.safe_dump(config))
    return assert_clean_run(root, root / "run", "train", root / "c.yaml", "--out", root / "run")


IMAGES = (np.arange(12 * 16).reshape(12, 4, 4) * 7 % 256).astype(np.uint8)
LABELS = (np.arange(12) % 3).astype(np.uint8)


def npz_bytes() -> bytes:
    out = io.BytesIO()
    np.savez(out, x_train=IMAGES, y_train=LABELS.astype(np.int64))
    return out.getvalue()


def write_npz(blob: bytes) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "d.npz").write_bytes(blob)
        return train_on(Path(tmp), "d.npz")


@FUZZ
@given(edit=EDITS, member=st.one_of(st.none(), st.integers(0, 1)))
def test_damaged_npz_data_never_crashes(edit, member):
    write_npz(edited(npz_bytes(), edit) if member is None
              else edited_member(npz_bytes(), member, edit))


def idx_files() -> dict:
    return {"images": idx_bytes(0x08, IMAGES.shape, IMAGES.tobytes()),
            "labels": idx_bytes(0x08, LABELS.shape, LABELS.tobytes())}


def write_idx(blobs: dict, gz: bool) -> int:
    import gzip

    with tempfile.TemporaryDirectory() as tmp:
        for kind, idx in (("images", 3), ("labels", 1)):
            name = f"train-{kind}-idx{idx}-ubyte"
            if gz:
                (Path(tmp) / f"{name}.gz").write_bytes(gzip.compress(blobs[kind]))
            else:
                (Path(tmp) / name).write_bytes(blobs[kind])
        return train_on(Path(tmp), ".")


@FUZZ
@given(edit=EDITS, which=st.sampled_from(["images", "labels"]), gz=st.booleans(),
       in_header=st.booleans())
def test_damaged_idx_data_never_crashes(edit, which, gz, in_header):
    blobs = idx_files()
    target = blobs[which]
    blobs[which] = edited(target[:16], edit) + target[16:] if in_header else edited(target, edit)
    write_idx(blobs, gz)


def write_pngs(edit, which) -> int:
    from PIL import Image

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "images"
        for i, (image, label) in enumerate(zip(IMAGES, LABELS, strict=True)):
            path = folder / f"class{label}" / f"{i}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(image).save(path)
            if i == which:
                path.write_bytes(edited(path.read_bytes(), edit, low=16))  # past the signature
        return train_on(Path(tmp), "images")


@FUZZ
@given(edit=EDITS, which=st.integers(0, 11))
def test_damaged_image_folder_pngs_never_crash(edit, which):
    pytest.importorskip("PIL")
    write_pngs(edit, which)
