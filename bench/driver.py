"""Runs every benchmark case REPS times, each run in a fresh process, and
writes all runs to a JSON file (bench/report.py turns it into the table).

    python driver.py --data DIR --lib LIB [--cran-lib CLIB] [--reps 5]
                     [--base-lib BLIB [--base-label LABEL]]
                     [--torch-python PY] [--torch-scale S]
                     [--out results.json] [--only CASE,CASE]

Runs go round-robin (rep 1 of every case and implementation, then rep 2,
...), so slow drift on a shared machine spreads over all of them. Before
each run, the file it reads is read once, so the page cache is warm.

The torch cases (TORCH_CASES, issue 22) run when R torch (with LibTorch)
is installed beside this package and a Python with torch and safetensors
is given (--torch-python, default $TORCH_PY): their data files are written
by gen-torch.R into DIR/torch; without them the cases are skipped, and
say so.

With --base-lib, an implementation "base" runs every case and command that
"ours" runs (not the 1-thread variants), with R_LIBS=BLIB: an older build of
this package, for an A/B comparison on the same data. Each "base" run sits
next to its "ours" run.

Within each rep, a case's runs (Python's, ours, base, ...) are rotated by
the rep's number, so that over as many reps as a case has runs each takes
each place once: on a VM whose balloon takes back free memory (free page
reporting), a process's first touch of new memory costs a fault in the
host unless the process just before it freed as much, and a fixed order
measured that order (bench/README.md).
"""

import argparse
import itertools
import json
import os
import platform
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
MiB = 1 << 20

# (case id, what, data file, R framework, target ratio to Python or None)
LOAD_CASES = [
    ("load_f64", "F64 -> R double", "f64", "array", 1.0),
    ("load_i32", "I32 -> R integer", "i32", "array", 1.0),
    ("load_u8", "U8 -> R raw (framework = \"raw\")", "u8", "raw", 1.0),
    ("load_u8_int", "U8 -> R integer (default framework)", "u8", "array", None),
    ("load_u8_arr", "U8 -> R raw array (uint8 = \"raw\")", "u8", "rawarray", None),
    ("load_f32", "F32 -> R double", "f32", "array", 1.25),
    ("load_small", "1000 x F32[256,256] -> R double", "small", "array", 1.0),
    ("load_tiny", "20,000 x F32[4,4] -> R double", "tiny", "array", 1.0),
]
SAVE_CASES = [
    ("save_f64", "save R doubles as F64 + fsync", 1.0),
    ("save_f32", "save R doubles as F32 + fsync", 1.0),
]
LIMIT_FILES = ["f64", "i32", "u8", "f32", "small", "tiny"]
# torch users' paths (issue 22): (case id, what, data key in torch.json,
# Python's case (case.py "torch ...") or None, what the ratio is taken
# against ("py", or another case of this package), target ratio).
TORCH_CASES = [
    ("torch_load", "`torch_load()` of a `torch_save()` file, 16 x F32[4096, 4096]", "torchsave", None, "torch_file", 1.1),
    ("torch_file", "`safe_load_file(path, framework = \"torch\")` of that file", "torchsave", None, None, None),
    ("torch_f32", "`safe_load_file(framework = \"torch\")`, 16 x F32[4096, 4096]; Python `load_file()` + `clone()`", "f32", "load", "py", 1.1),
    ("torch_bf16", "the same, one shard of 32 x BF16[2048, 8192]", "bf16", "load", "py", 1.1),
    ("torch_shards", "the same, 4 shards of 32 x BF16[2048, 8192] from their index", "shards", "shards", "py", 1.1),
    ("torch_model", "`safe_load_model()` of those shards into 128 BF16 linear layers; Python `load_model()` per shard", "shards", "model", "py", 1.0),
    ("torch_save", "`torch_save()` of 16 x F32[4096, 4096]; Python `save_file()`", "save", "save", "py", 1.2),
    ("torch_save_sync", "the same, then fsync of the file", "save", "save_sync", "py", 1.2),
]


def sh(cmd):
    try:
        return subprocess.run(cmd, shell=True, capture_output=True, text=True, timeout=60).stdout.strip()
    except Exception:  # noqa: BLE001 - best effort machine description
        return ""


def machine(args):
    mem = sh("awk '/MemTotal/ {printf \"%.1f GiB\", $2/1048576}' /proc/meminfo")
    import numpy
    import safetensors

    repo = os.path.dirname(HERE)
    return {
        "cpu": sh("lscpu | sed -n 's/^Model name:[[:space:]]*//p' | head -1"),
        "cores": os.cpu_count(),
        "memory": mem,
        "kernel": platform.release(),
        "thp": sh("cat /sys/kernel/mm/transparent_hugepage/enabled"),
        "r": sh("Rscript -e 'cat(R.version.string)'"),
        "python": platform.python_version(),
        "numpy": numpy.__version__,
        "safetensors_py": safetensors.__version__,
        "rustc": sh("rustc --version"),
        "ours": sh(f"R_LIBS={args.lib} Rscript -e 'cat(as.character(packageVersion(\"safetensors\")))'"),
        "ours_commit": sh(f"git -C {repo} rev-parse --short HEAD") + (" (modified)" if sh(f"git -C {repo} status --porcelain -- src R") else ""),
        "cran": sh(f"R_LIBS={args.cran_lib} Rscript -e 'cat(as.character(packageVersion(\"safetensors\")))'") if args.cran_lib else "",
        "base": sh(f"R_LIBS={args.base_lib} Rscript -e 'cat(as.character(packageVersion(\"safetensors\")))'") if args.base_lib else "",
        "base_label": args.base_label if args.base_lib else "",
        "base_lib": args.base_lib,
        "date": time.strftime("%Y-%m-%d %H:%M"),
    }


def warm(path):
    buf = bytearray(16 * MiB)
    with open(path, "rb", buffering=0) as f:
        while f.readinto(buf):
            pass


def plan(args, man):
    """Every run: (case, impl, argv, env, file to warm)."""
    py = [sys.executable, os.path.join(HERE, "case.py")]
    rs = ["Rscript", os.path.join(HERE, "case.R")]
    # Each library first, then what R_LIBS already holds (R torch, for the
    # torch cases).
    more = os.pathsep + os.environ["R_LIBS"] if os.environ.get("R_LIBS") else ""
    ours_env = {"R_LIBS": args.lib + more}
    cran_env = {"R_LIBS": args.cran_lib + more} if args.cran_lib else None
    base_env = {"R_LIBS": args.base_lib + more} if args.base_lib else None
    runs = []

    def add(case, impl, argv, env, warm_path):
        runs.append((case, impl, argv, env or {}, warm_path))
        if impl == "ours" and base_env and case != "load_u8_arr":
            # The same command with the older build ("ours" sets R_LIBS);
            # uint8 = "raw" (load_u8_arr) is newer than the A/B baseline.
            runs.append((case, "base", argv, {**(env or {}), **base_env}, warm_path))

    for case, _, key, fw, _ in LOAD_CASES:
        path = man[key]["path"]
        add(case, "py", py + ["py", "load", path], None, path)
        add(case, "ours", rs + ["ours", "load", path, fw], ours_env, path)
        if key in ("f64", "f32", "small"):
            add(case, "ours_1t", rs + ["ours", "load", path, fw], {**ours_env, "BENCH_THREADS": "1"}, path)
        if cran_env and case not in ("load_u8_int", "load_u8_arr"):
            add(case, "cran", rs + ["cran", "load", path, fw], cran_env, path)
    path, name = man["f64"]["path"], man["f64"]["middle"]
    add("open_one", "py", py + ["py", "open_one", path, name], None, path)
    add("open_one", "ours", rs + ["ours", "open_one", path, name], ours_env, path)
    if cran_env:
        add("open_one", "cran", rs + ["cran", "open_one", path, name], cran_env, path)
    rows, n = man["save"]["rows"], man["save"]["n"]
    for case, _, _ in SAVE_CASES:
        out = os.path.join(args.data, f"out-{case}.safetensors")
        a = [out, str(rows), str(n)]
        add(case, "py", py + ["py", case] + a, None, None)
        add(case, "ours", rs + ["ours", case] + a, ours_env, None)
        if cran_env:
            add(case, "cran", rs + ["cran", case] + a, cran_env, None)
    for key in LIMIT_FILES:
        path = man[key]["path"]
        add(f"limit_{key}", "fromfile", py + ["limit", "fromfile", path], None, path)
        add(f"limit_{key}", "memcpy", py + ["limit", "memcpy", path], None, path)
        add(f"limit_{key}", "readbin", rs + ["readbin", "load", path], None, path)
    tman = man.get("torch")
    if tman:
        tpy = [args.torch_python, os.path.join(HERE, "case.py"), "torch"]
        for case, _, key, py_case, _, _ in TORCH_CASES:
            if key == "save":
                out = os.path.join(args.data, f"out-{case}.safetensors")
                argv, py_argv, path = [out, str(tman["save"]["rows"])], [out, str(tman["save"]["rows"])], None
            elif case == "torch_model":
                rows = str(tman["shards"]["rows"])
                argv, py_argv, path = [tman["shards"]["path"], rows], [tman["shards"]["dir"], rows], None
            else:
                path = tman[key]["path"]
                argv, py_argv = [path], [path]
            # Shards are warmed file by file (the index is tiny).
            warm_path = path if key != "shards" else None
            add(case, "ours", rs + ["ours", case] + argv, ours_env, warm_path)
            if py_case:
                add(case, "py", tpy + [py_case] + py_argv, None, warm_path)
    if args.only:
        keep = set(args.only.split(","))
        runs = [r for r in runs if r[0] in keep]
    return runs


def torch_setup(args):
    """The torch cases' data (DIR/torch, gen-torch.R) and manifest, or None
    with the reason they are skipped."""
    if not args.torch_python:
        return None, "no Python with torch (--torch-python or $TORCH_PY)"
    ok = subprocess.run([args.torch_python, "-c", "import torch, safetensors.torch, numpy"], capture_output=True)
    if ok.returncode != 0:
        return None, f"{args.torch_python} can't import torch and safetensors"
    check = "quit(status = if (requireNamespace('torch', quietly = TRUE) && torch::torch_is_installed()) 0 else 1)"
    env = {**os.environ, "R_LIBS": args.lib + os.pathsep + os.environ.get("R_LIBS", "")}
    if subprocess.run(["Rscript", "-e", check], env=env, capture_output=True).returncode != 0:
        return None, "R torch (with LibTorch) is not installed"
    tdir = os.path.join(args.data, "torch")
    gen = subprocess.run(["Rscript", os.path.join(HERE, "gen-torch.R"), tdir, str(args.torch_scale)], env=env,
                         capture_output=True, text=True)
    if gen.returncode != 0:
        return None, "gen-torch.R failed: " + gen.stderr[-400:]
    with open(os.path.join(tdir, "torch.json")) as f:
        return json.load(f), ""


def rotated(runs, rep):
    """`runs` in the order of rep `rep`: each case's runs (consecutive in
    `runs`) in the rep-th of all their orders, taken in turn. Over as many
    reps as there are orders (6 for three runs), each run takes each place
    equally often and follows each other run equally often: on a VM whose
    new memory is cheap only right after a process that freed as much,
    a fixed cycle (a rotation) had base always right after ours."""
    out, group = [], []
    for r in runs + [None]:
        if group and (r is None or r[0] != group[0][0]):
            orders = list(itertools.permutations(range(len(group))))
            out.extend(group[k] for k in orders[rep % len(orders)])
            group = []
        if r is not None:
            group.append(r)
    return out


def warm_dir(path):
    for name in sorted(os.listdir(path)):
        if name.endswith(".safetensors"):
            warm(os.path.join(path, name))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    ap.add_argument("--lib", required=True)
    ap.add_argument("--cran-lib", default="")
    ap.add_argument("--base-lib", default="")
    ap.add_argument("--base-label", default="")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--out", default=os.path.join(HERE, "results.json"))
    ap.add_argument("--only", default="")
    ap.add_argument("--save-rows", type=int, default=4096)
    ap.add_argument("--torch-python", default=os.environ.get("BENCH_TORCH_PYTHON", os.environ.get("TORCH_PY", "")))
    ap.add_argument("--torch-scale", type=float, default=1.0)
    args = ap.parse_args()
    with open(os.path.join(args.data, "manifest.json")) as f:
        man = json.load(f)
    tman, why = torch_setup(args)
    if tman:
        man["torch"] = tman
    else:
        print(f"torch cases skipped: {why}", file=sys.stderr)
    # Saving: 8 R double matrices [rows, 4096] (1 GiB at rows = 4096).
    man["save"] = {"rows": args.save_rows, "n": 8, "data_bytes": 8 * args.save_rows * 4096 * 8}
    runs = plan(args, man)
    results = {"machine": machine(args), "manifest": man, "reps": args.reps, "runs": []}
    if not tman:
        results["torch_skipped"] = why
    else:
        results["machine"]["torch_python"] = sh(f"{args.torch_python} -c 'import torch; print(torch.__version__)'")
        results["machine"]["torch_r"] = sh(f"R_LIBS={args.lib}:$R_LIBS Rscript -e 'cat(as.character(packageVersion(\"torch\")))'")
    total = len(runs) * args.reps
    done = 0
    for rep in range(args.reps):
        for case, impl, argv, env, warm_path in rotated(runs, rep):
            done += 1
            if warm_path:
                warm(warm_path)
            elif case in ("torch_shards", "torch_model"):
                # Loads of the whole shard set: every shard warmed.
                warm_dir(man["torch"]["shards"]["dir"])
            if "save" in case:
                # Each save starts with nothing of the runs before waiting
                # to be written back: 1 GiB saves took 0.37-2.6 s in one run
                # as the kernel's writeback of earlier saves came and went.
                os.sync()
            t0 = time.perf_counter()
            p = subprocess.run(argv, env={**os.environ, **env}, capture_output=True, text=True)
            wall = time.perf_counter() - t0
            rec = {"case": case, "impl": impl, "rep": rep, "wall": wall}
            line = p.stdout.strip().splitlines()[-1] if p.stdout.strip() else ""
            if p.returncode != 0 or not line.startswith("{"):
                rec["error"] = (p.stderr.strip() or p.stdout.strip())[-600:]
                print(f"[{done}/{total}] {case} {impl}: FAILED {rec['error'][-200:]}", file=sys.stderr)
            else:
                rec.update(json.loads(line))
                print(f"[{done}/{total}] {case} {impl}: {rec['time']:.3f} s", file=sys.stderr)
            results["runs"].append(rec)
            # Keep partial results if interrupted.
            with open(args.out, "w") as f:
                json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
