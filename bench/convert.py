"""The Python peer of bench/convert.R: a sharded F32 checkpoint converted to
BF16 with safetensors and torch, as one does it in Python (load each shard,
convert its tensors with `.to(torch.bfloat16)`, save), resharded into
shards of at most MAX_BYTES, with the index transformers writes.

    python convert.py gen DIR GIB SHARDS   # DIR/model-0000k-of-0000n.safetensors + index (F32)
    python convert.py run INDEX OUT_DIR MAX_BYTES

`gen` writes GIB GiB of random F32 tensors of 16384 x 1024 (64 MiB each)
in SHARDS shards. `run` holds one input shard and the output shard being
filled, as a Python script must (save_file() takes a whole file's
tensors).
"""

import json
import os
import sys

import numpy as np
import torch
from safetensors.numpy import save_file as save_numpy
from safetensors.torch import load_file, save_file

ROWS, COLS = 16384, 1024


def gen(out, gib, shards):
    os.makedirs(out, exist_ok=True)
    n = int(gib * 16)  # 64 MiB tensors
    per = -(-n // shards)
    rng = np.random.default_rng(1)
    weight_map = {}
    for s in range(shards):
        name = f"model-{s + 1:05d}-of-{shards:05d}.safetensors"
        tensors = {}
        for k in range(s * per, min(n, (s + 1) * per)):
            key = f"model.layers.{k}.weight"
            tensors[key] = rng.standard_normal((ROWS, COLS), dtype=np.float32)
            weight_map[key] = name
        save_numpy(tensors, os.path.join(out, name), metadata={"format": "pt"})
    index = {"metadata": {"total_size": n * ROWS * COLS * 4}, "weight_map": weight_map}
    with open(os.path.join(out, "model.safetensors.index.json"), "w") as f:
        json.dump(index, f, indent=2, sort_keys=True)


def run(index, out, max_bytes):
    os.makedirs(out, exist_ok=True)
    with open(index) as f:
        weight_map = json.load(f)["weight_map"]
    folder = os.path.dirname(index)
    files = sorted(set(weight_map.values()))
    pending, size, written, new_map = {}, 0, [], {}
    total = 0

    def flush():
        nonlocal pending, size
        if pending:
            name = f"model-{len(written) + 1:05d}.safetensors"
            save_file(pending, os.path.join(out, name), metadata={"format": "pt"})
            written.append((name, list(pending)))
        pending, size = {}, 0

    for file in files:
        shard = load_file(os.path.join(folder, file))
        for key in list(shard):
            t = shard.pop(key).to(torch.bfloat16)
            n = t.numel() * t.element_size()
            if pending and size + n > max_bytes:
                flush()
            pending[key] = t
            size += n
            total += n
        del shard
    flush()
    # The transformers names, once the number of shards is known.
    k = len(written)
    for i, (name, keys) in enumerate(written):
        final = f"model-{i + 1:05d}-of-{k:05d}.safetensors"
        os.replace(os.path.join(out, name), os.path.join(out, final))
        for key in keys:
            new_map[key] = final
    with open(os.path.join(out, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": new_map}, f, indent=2, sort_keys=True)


if __name__ == "__main__":
    if sys.argv[1] == "gen":
        gen(sys.argv[2], float(sys.argv[3]), int(sys.argv[4]))
    elif sys.argv[1] == "run":
        run(sys.argv[2], sys.argv[3], int(float(sys.argv[4])))
    else:
        sys.exit("usage: convert.py gen DIR GIB SHARDS | run INDEX OUT_DIR MAX_BYTES")
