"""Exported models against cnncli: the largest |logit difference| of every shipped config
through ONNX Runtime, back in cnncli after ``cnncli import`` of that ONNX file, and through
the generated PyTorch module (pinned ``torch==2.13.0``), whose state_dict keys must be the
checkpoint's parameter names.

Each config gets its default (PyTorch) initial weights and random batch-norm statistics,
then a checkpoint with standardisation, exported both ways and run on raw 0..255 inputs.
A runtime that is not installed is reported and skipped.

    python benchmarks/check_exports.py [--batch 4]
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import tempfile
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parent.parent
TORCH_VERSION = "2.13.0"
sys.path.insert(0, str(ROOT / "tests"))


def main() -> None:
    from interop_models import make_checkpoint, raw_batch

    from cnncli.data import normalize
    from cnncli.interop.export import export
    from cnncli.interop.onnx_import import import_onnx
    from cnncli.training.checkpoint import load_checkpoint

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=4)
    args = parser.parse_args()
    try:
        import onnxruntime as ort
    except ImportError:
        ort = None
    try:
        import torch
    except ImportError:
        torch = None
    if torch is not None and not torch.__version__.startswith(TORCH_VERSION):
        print(f"torch {torch.__version__} is not the pinned {TORCH_VERSION}: skipping it")
        torch = None
    print(f"{'config':<14} {'onnxruntime':>14} {'imported':>14} {'pytorch':>14}")
    for config in sorted((ROOT / "configs").glob("*.yaml")):
        with tempfile.TemporaryDirectory() as tmp:
            ckpt_path = make_checkpoint(Path(tmp) / "last.npz", yaml.safe_load(config.read_text()))
            ckpt = load_checkpoint(ckpt_path)
            model = ckpt.model()
            raw = raw_batch(model.input_shape, n=args.batch)
            expected = model.forward(normalize(raw, ckpt.normalization))
            cells = []
            if ort is None:
                cells += ["not installed"] * 2
            else:
                path = export(ckpt_path, "onnx")
                session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
                got = session.run(["logits"], {"input": raw})[0]
                cells.append(f"{np.abs(got - expected).max():.2e}")
                back = load_checkpoint(import_onnx(path, Path(tmp) / "back").checkpoint_path)
                got = back.model().forward(normalize(raw, back.normalization))
                cells.append(f"{np.abs(got - expected).max():.2e}")
            if torch is None:
                cells.append("not installed")
            else:
                folder = export(ckpt_path, "pytorch")
                spec = importlib.util.spec_from_file_location("exported", folder / "model.py")
                module = importlib.util.module_from_spec(spec)
                spec.loader.exec_module(module)
                net = module.load()
                if set(net.state_dict()) != set(ckpt.state):
                    raise SystemExit(f"{config.stem}: the module's state_dict keys are not the "
                                     "checkpoint's parameter names")
                with torch.no_grad():
                    got = net(torch.from_numpy(raw)).numpy()
                cells.append(f"{np.abs(got - expected).max():.2e}")
        print(f"{config.stem:<14} {cells[0]:>14} {cells[1]:>14} {cells[2]:>14}")


if __name__ == "__main__":
    main()
