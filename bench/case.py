"""One timed measurement in a fresh Python process; prints one JSON line.

    python case.py IMPL CASE ARGS...

IMPL is "py" (safetensors.numpy), "torch" (safetensors.torch, run by a
Python that has torch: the torch cases of driver.py) or "limit" (the
raw-copy limit: np.fromfile of the file, or a copy of its bytes into fresh
memory). Only the call is timed; imports and input preparation are not. Peak RSS is VmHWM after the
call, reset (clear_refs 5) just before it; "rss_base" is VmRSS at the reset.
"""

import json
import os
import sys
import time

import numpy as np


def status():
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(("VmHWM:", "VmRSS:")):
                out[line.split(":")[0]] = int(line.split()[1]) * 1024
    return out


def reset_peak():
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    return status()["VmRSS"]


def fsync_path(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def shard_files(index):
    with open(index) as f:
        idx = json.load(f)
    base = os.path.dirname(index)
    return [os.path.join(base, name) for name in sorted(set(idx["weight_map"].values()))]


def torch_case(case, args):
    """The torch cases: Python's side of R's torch_* cases in case.R."""
    import torch
    from safetensors.torch import load_file, load_model, save_file

    prep = None
    if case in ("save", "save_sync"):
        torch.manual_seed(1)
        prep = {"t%02d" % i: torch.randn(int(args[1]), 4096) for i in range(1, 17)}
        if os.path.exists(args[0]):
            os.unlink(args[0])
    elif case == "model":
        class Net(torch.nn.Module):
            def __init__(self, rows):
                super().__init__()
                # Each layer turned into BF16 at once, as case.R does.
                self.layers = torch.nn.ModuleList(
                    [torch.nn.Linear(8192, rows, bias=False).to(torch.bfloat16) for _ in range(128)])

        prep = Net(int(args[1]))
    base = reset_peak()
    c0 = time.process_time()
    t0 = time.perf_counter()
    out_bytes = 0
    if case == "load":
        # Lazy tensors over a map, then copied: both sides end with the
        # data in process memory.
        res = {k: v.clone() for k, v in load_file(args[0]).items()}
    elif case == "shards":
        res = {}
        for f in shard_files(args[0]):
            res.update({k: v.clone() for k, v in load_file(f).items()})
    elif case == "model":
        for f in shard_files(os.path.join(args[0], "model.safetensors.index.json")):
            load_model(prep, f, strict=False)
        res = {}
    elif case in ("save", "save_sync"):
        save_file(prep, args[0])
        if case == "save_sync":
            fsync_path(args[0])
        res = {}
    else:
        raise SystemExit(f"unknown case torch {case}")
    elapsed = time.perf_counter() - t0
    cpu = time.process_time() - c0
    st = status()
    out_bytes = sum(v.numel() * v.element_size() for v in res.values())
    if case in ("save", "save_sync"):
        os.unlink(args[0])
    print(json.dumps({"time": elapsed, "cpu": cpu, "rss_peak": st["VmHWM"], "rss_base": base, "out_bytes": out_bytes}))


def main():
    impl, case, *args = sys.argv[1:]
    if impl == "torch":
        return torch_case(case, args)
    from safetensors import safe_open
    from safetensors.numpy import load_file, save_file

    prep = None
    if case.startswith("save_"):
        # save_f64 / save_f32 OUT ROWS N: N arrays [ROWS, 4096], float64 in
        # R; Python saves arrays of the target dtype (the same file).
        out, rows, n = args[0], int(args[1]), int(args[2])
        dtype = np.float64 if case == "save_f64" else np.float32
        rng = np.random.default_rng(1)
        prep = {f"t{i:02d}": rng.standard_normal((rows, 4096)).astype(dtype) for i in range(n)}
    elif impl == "limit" and case == "memcpy":
        prep = np.fromfile(args[0], dtype=np.uint8)

    base = reset_peak()
    c0 = time.process_time()
    t0 = time.perf_counter()
    if impl == "py" and case == "load":
        res = load_file(args[0])
    elif impl == "py" and case == "open_one":
        with safe_open(args[0], framework="numpy") as f:
            res = {args[1]: f.get_tensor(args[1])}
    elif impl == "py" and case.startswith("save_"):
        save_file(prep, out)
        fsync_path(out)
        res = prep
    elif impl == "limit" and case == "fromfile":
        res = {"x": np.fromfile(args[0], dtype=np.uint8)}
    elif impl == "limit" and case == "memcpy":
        res = {"x": prep.copy()}
    else:
        raise SystemExit(f"unknown case {impl} {case}")
    elapsed = time.perf_counter() - t0
    cpu = time.process_time() - c0
    st = status()
    out_bytes = sum(int(v.nbytes) for v in res.values())
    if case.startswith("save_"):
        os.unlink(out)
    print(json.dumps({"time": elapsed, "cpu": cpu, "rss_peak": st["VmHWM"], "rss_base": base, "out_bytes": out_bytes}))


if __name__ == "__main__":
    main()
