#!/usr/bin/env python3
"""Writes inst/extdata/example.safetensors, the small file of the examples.

    python3 -m pip install safetensors==0.8.0 numpy
    python3 tools/make-example.py

Tensors: `weight` (F32 [2, 3]), `bias` (F32 [3]) and `step` (I64 scalar),
with `__metadata__` {"format": "pt"} (one key, so the bytes are the same
on every run).
"""

import os

import numpy as np
from safetensors.numpy import save_file

root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
path = os.path.join(root, "inst", "extdata", "example.safetensors")
tensors = {
    "weight": np.array([[0.5, -1.0, 2.0], [1.5, 0.25, -3.0]], dtype=np.float32),
    "bias": np.array([0.1, 0.2, 0.3], dtype=np.float32),
    "step": np.array(1000, dtype=np.int64),
}
save_file(tensors, path, metadata={"format": "pt"})
os.chmod(path, 0o644)  # safetensors 0.8.0 creates files with mode 0600
print(f"wrote {path} ({os.path.getsize(path)} bytes)")
