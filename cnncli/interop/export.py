"""``cnncli export``: one checkpoint out as ONNX, safetensors or a PyTorch module."""

from __future__ import annotations

from pathlib import Path

from cnncli.errors import ConfigError
from cnncli.interop.common import default_output, load_source

FORMATS = ("onnx", "safetensors", "pytorch")
SUFFIXES = {"onnx": ".onnx", "safetensors": ".safetensors", "pytorch": "_pytorch"}


def export(source, fmt: str, out=None, *, opset: int | None = None,
           normalization: bool = True) -> Path:
    """Write the checkpoint ``source`` (or a run directory's last.npz) in ``fmt``; returns
    the file (or, for pytorch, the folder) written."""
    if fmt not in FORMATS:
        raise ConfigError(f"format must be one of {', '.join(FORMATS)}; got {fmt!r}")
    if opset is not None and fmt != "onnx":
        raise ConfigError(f"opset applies only to format=onnx, not {fmt}")
    if fmt == "onnx":  # before reading anything: a missing extra is the first thing to say
        from cnncli.interop.onnx_export import DEFAULT_OPSET, check_opset, export_onnx

        check_opset(DEFAULT_OPSET if opset is None else opset)
    ckpt, model = load_source(source)
    out = Path(out) if out is not None else default_output(ckpt, SUFFIXES[fmt])
    if fmt == "onnx":
        return export_onnx(ckpt, model, out, opset=DEFAULT_OPSET if opset is None else opset,
                           normalization=normalization)
    from cnncli.interop.pytorch import export_pytorch, export_safetensors

    if fmt == "safetensors":
        return export_safetensors(ckpt, model, out)
    return export_pytorch(ckpt, model, out, normalization=normalization)
