"""Models leaving cnncli and coming back: ONNX, safetensors and PyTorch export, ONNX import, and
starting a run from other weights. Imports errors, nn, config, data and training; only the CLI
imports it."""
