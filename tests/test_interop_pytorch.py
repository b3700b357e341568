"""The generated PyTorch module loads its safetensors and gives cnncli's logits (needs the
pinned torch==2.13.0; skipped without torch, which is never a test dependency)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from interop_models import EVERY_LAYER, make_checkpoint, raw_batch, shipped_config, small_config

from cnncli.cli import main
from cnncli.data import normalize
from cnncli.training.checkpoint import load_checkpoint

ROOT = Path(__file__).resolve().parent.parent


def load_module(folder: Path):
    spec = importlib.util.spec_from_file_location(f"exported_{folder.name}", folder / "model.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("config", [ROOT / "configs/digits.yaml", ROOT / "configs/lenet5.yaml",
                                    ROOT / "configs/cifar_small.yaml", "every layer"],
                         ids=lambda c: getattr(c, "stem", c))
def test_the_generated_module_gives_cnncli_logits(tmp_path, config):
    torch = pytest.importorskip("torch")
    raw_config = small_config(EVERY_LAYER) if config == "every layer" else shipped_config(config)
    ckpt_path = make_checkpoint(tmp_path / "run" / "last.npz", raw_config)
    result = CliRunner().invoke(main, ["export", str(tmp_path / "run"), "--format", "pytorch"])
    assert result.exit_code == 0, result.output
    folder = tmp_path / "run" / "last_pytorch"
    assert sorted(p.name for p in folder.iterdir()) == ["model.py", "model.safetensors"]
    assert "cnncli" not in (folder / "model.py").read_text().split('"""', 2)[2]  # no import
    net = load_module(folder).load()
    ckpt = load_checkpoint(ckpt_path)
    raw = raw_batch(ckpt.model().input_shape, n=3)
    with torch.no_grad():
        logits = net(torch.from_numpy(raw)).numpy()
    expected = ckpt.model().forward(normalize(raw, ckpt.normalization))
    np.testing.assert_allclose(logits, expected, atol=1e-4, rtol=0)
    assert not net.training
