"""Writes the benchmark's data files with Python's safetensors (numpy).

    python gen.py DIR [--scale S]

Files (S = 1 gives the sizes below; smaller S shrinks the big files for a
quick trial run):
  f64.safetensors     16 x F64[4096, 2048]   1 GiB of data
  i32.safetensors     16 x I32[4096, 4096]   1 GiB
  u8.safetensors      16 x U8[4096, 16384]   1 GiB
  f32.safetensors     16 x F32[4096, 4096]   1 GiB (format.md's "big" file)
  small.safetensors   1000 x F32[256, 256]   262 MB (format.md's "small")
  tiny.safetensors    20,000 x F32[4, 4]     1.3 MB of data, 1.6 MB header
Existing files of the right size are kept.
"""

import argparse
import json
import os
import sys

import numpy as np
from safetensors.numpy import save_file

MiB = 1 << 20


def specs(scale):
    rows = max(1, int(4096 * scale))
    return {
        "f64": [(f"t{i:02d}", np.float64, (rows, 2048)) for i in range(16)],
        "i32": [(f"t{i:02d}", np.int32, (rows, 4096)) for i in range(16)],
        "u8": [(f"t{i:02d}", np.uint8, (rows, 16384)) for i in range(16)],
        "f32": [(f"t{i:02d}", np.float32, (rows, 4096)) for i in range(16)],
        "small": [(f"layer.{i}.weight", np.float32, (256, 256)) for i in range(1000)],
        "tiny": [(f"p{i}", np.float32, (4, 4)) for i in range(20000)],
    }


def make(dtype, shape, rng):
    if np.issubdtype(dtype, np.floating):
        return rng.standard_normal(shape, dtype=np.float32).astype(dtype, copy=False)
    info = np.iinfo(dtype)
    # Avoid -2^31 in I32 (NA in R), which would change R's result type.
    return rng.integers(max(info.min, -(2**31) + 1), info.max, size=shape, dtype=dtype, endpoint=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dir")
    ap.add_argument("--scale", type=float, default=1.0)
    args = ap.parse_args()
    os.makedirs(args.dir, exist_ok=True)
    rng = np.random.default_rng(20240601)
    manifest = {}
    for name, tensors in specs(args.scale).items():
        path = os.path.join(args.dir, f"{name}.safetensors")
        data_bytes = sum(int(np.prod(s)) * np.dtype(d).itemsize for _, d, s in tensors)
        manifest[name] = {
            "path": path,
            "tensors": len(tensors),
            "data_bytes": data_bytes,
            "dtype": np.dtype(tensors[0][1]).name,
            "shape": list(tensors[0][2]),
            "first": tensors[0][0],
            "middle": tensors[len(tensors) // 2][0],
        }
        stamp = path + ".json"
        if os.path.exists(stamp) and os.path.exists(path):
            with open(stamp) as f:
                if json.load(f) == manifest[name]:
                    print(f"kept {path}", file=sys.stderr)
                    manifest[name]["file_bytes"] = os.path.getsize(path)
                    continue
        print(f"writing {path} ({data_bytes / MiB:.0f} MiB)", file=sys.stderr)
        save_file({n: make(d, s, rng) for n, d, s in tensors}, path)
        with open(stamp, "w") as f:
            json.dump(manifest[name], f)
        manifest[name]["file_bytes"] = os.path.getsize(path)
    with open(os.path.join(args.dir, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1)


if __name__ == "__main__":
    main()
