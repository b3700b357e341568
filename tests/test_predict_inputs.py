"""predict on folders and globs of images, --resize fit|crop|none, --top-k and JSON output."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from interop_models import make_checkpoint, shipped_config

from cnncli.cli import main
from cnncli.data import load_inputs

Image = pytest.importorskip("PIL.Image")
ROOT = Path(__file__).resolve().parent.parent
SCALE = {"mode": "scale", "scale": np.float32(16.0)}


@pytest.fixture
def checkpoint(tmp_path):
    return make_checkpoint(tmp_path / "last.npz", shipped_config(ROOT / "configs/digits.yaml"),
                           normalization=SCALE)


def write_images(folder: Path, sizes) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    paths = []
    for i, (w, h) in enumerate(sizes):
        path = folder / f"img{i}.png"
        Image.fromarray(rng.integers(0, 255, (h, w), dtype=np.uint8)).save(path)
        paths.append(path)
    (folder / "notes.txt").write_text("not an image")
    return paths


def predict(*args):
    return CliRunner().invoke(main, ["predict", *map(str, args)])


def test_a_folder_and_a_glob_give_every_image_in_name_order(tmp_path, checkpoint):
    write_images(tmp_path / "imgs", [(8, 8), (16, 16), (12, 8)])
    by_folder = predict(checkpoint, tmp_path / "imgs", "--output", tmp_path / "a.json")
    assert by_folder.exit_code == 0, by_folder.output
    by_glob = predict(checkpoint, f"{tmp_path}/imgs/img*.png", "--output", tmp_path / "b.json")
    assert by_glob.exit_code == 0, by_glob.output
    rows = json.loads((tmp_path / "a.json").read_text())
    assert [r["input"] for r in rows] == ["img0.png", "img1.png", "img2.png"]
    assert rows == json.loads((tmp_path / "b.json").read_text())
    assert len(rows[0]["top"]) == 3 and rows[0]["predicted"] == rows[0]["top"][0]["class"]
    assert sum(p["probability"] for p in rows[0]["top"]) <= 1.0 + 1e-6


def test_top_k_and_csv_output(tmp_path, checkpoint):
    write_images(tmp_path / "imgs", [(8, 8)])
    result = predict(checkpoint, tmp_path / "imgs", "--top-k", "2", "--output",
                     tmp_path / "p.csv")
    assert result.exit_code == 0
    header = (tmp_path / "p.csv").read_text().splitlines()[0]
    assert header == "input,predicted,probability,class_2,probability_2"


def test_resize_none_refuses_another_size_and_crop_keeps_the_centre(tmp_path, checkpoint):
    paths = write_images(tmp_path / "imgs", [(8, 8), (16, 8)])
    result = predict(checkpoint, paths[1], "--resize", "none")
    assert result.exit_code == 2 and len(result.output.splitlines()) == 1
    assert "img1.png is 16x8 (WxH) but the model takes 8x8 images (use --resize fit or " \
        "--resize crop)" in result.output
    assert predict(checkpoint, paths[0], "--resize", "none").exit_code == 0
    x, _ = load_inputs([str(paths[1])], (1, 8, 8), {"mode": "none"}, resize="crop")
    pixels = np.asarray(Image.open(paths[1]), np.float32)
    assert np.array_equal(x[0, 0], pixels[:, 4:12])  # 16x8 covers 8x8 at scale 1: the centre
    fit, _ = load_inputs([str(paths[1])], (1, 8, 8), {"mode": "none"}, resize="fit")
    assert not np.array_equal(fit, x)


def test_an_empty_folder_or_glob_is_one_line(tmp_path, checkpoint):
    (tmp_path / "empty").mkdir()
    result = predict(checkpoint, tmp_path / "empty")
    assert result.exit_code == 2 and "holds no image files" in result.output
    result = predict(checkpoint, f"{tmp_path}/nothing*.png")
    assert result.exit_code == 2 and "no file matches" in result.output
