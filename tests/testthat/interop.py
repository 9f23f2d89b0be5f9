"""Python's half of the live interop tests (test-interop.R runs it).

    python3 interop.py check FILE EXPECT.json    read FILE with safetensors, compare with EXPECT
    python3 interop.py resave FILE OUT KEY=VALUE  read FILE, write its tensors to OUT with one metadata key
    python3 interop.py write OUT EXPECT.json SEED DTYPE...
                                                  write random tensors, and EXPECT as fixtures/expected.json

Numpy dtypes are read with `safetensors.numpy.load_file` and written with
`safetensors.numpy.save_file`. BF16, F8 and F4 need ml_dtypes and go
through `safetensors.deserialize` (load_file can't make F8 or F4 arrays) and,
for F4, `serialize_file` with a `TensorSpec` of packed bytes.
"""

import json
import math
import sys

import numpy as np
import safetensors
from safetensors import TensorSpec
from safetensors.numpy import load_file, save_file

try:
    import ml_dtypes
except ImportError:  # the R side skips the dtypes that need it
    ml_dtypes = None

NUMPY = {
    "BOOL": "bool", "U8": "uint8", "I8": "int8", "I16": "int16", "U16": "uint16", "I32": "int32",
    "U32": "uint32", "I64": "int64", "U64": "uint64", "F16": "float16", "F32": "float32",
    "F64": "float64", "C64": "complex64",
}
ML = {
    "BF16": "bfloat16", "F8_E4M3": "float8_e4m3fn", "F8_E5M2": "float8_e5m2",
    "F8_E4M3FNUZ": "float8_e4m3fnuz", "F8_E5M2FNUZ": "float8_e5m2fnuz", "F8_E8M0": "float8_e8m0fnu",
    "F4": "float4_e2m1fn",
}
INTS = ["U8", "I8", "I16", "U16", "I32", "U32", "I64", "U64"]


def np_dtype(dtype):
    if dtype in NUMPY:
        return np.dtype(NUMPY[dtype])
    return np.dtype(getattr(ml_dtypes, ML[dtype]))


def unpack4(data, n):
    codes = np.frombuffer(data, dtype=np.uint8)
    out = np.empty(2 * len(codes), dtype=np.uint8)
    out[0::2] = codes & 0x0F  # the first element is in the low nibble
    out[1::2] = codes >> 4
    return out[:n]


def pack4(arr):
    codes = arr.ravel().view(np.uint8)
    return (codes[0::2] | (codes[1::2] << 4)).astype(np.uint8)


def load_any(path):
    """{name: (dtype, array)}: numpy dtypes through load_file, others by hand."""
    with open(path, "rb") as f:
        entries = safetensors.deserialize(f.read())
    dtypes = {name: t["dtype"] for name, t in entries}
    if all(d in NUMPY for d in dtypes.values()):
        arrays = load_file(path)
        assert set(arrays) == set(dtypes)
        return {k: (dtypes[k], a) for k, a in arrays.items()}
    out = {}
    for name, t in entries:
        dtype, shape, data = t["dtype"], t["shape"], bytes(t["data"])
        if dtype == "F4":
            n = int(np.prod(shape, dtype=np.int64))
            arr = unpack4(data, n).view(np_dtype(dtype)).reshape(shape)
        else:
            arr = np.frombuffer(data, dtype=np_dtype(dtype)).reshape(shape)
        out[name] = (dtype, arr)
    return out


def save_any(tensors, path, metadata):
    """Writes {name: (dtype, array)}, with save_file unless F4 needs a TensorSpec."""
    if not any(d == "F4" for d, _ in tensors.values()):
        # (copy(order="C"), not ascontiguousarray(), which makes 0-d arrays 1-d)
        save_file({k: a.copy(order="C") for k, (_, a) in tensors.items()}, path, metadata=metadata)
        return
    keep, specs = [], {}
    for k, (d, a) in tensors.items():
        buf = pack4(a) if d == "F4" else a.copy(order="C")
        keep.append(buf)
        name = "float4_e2m1fn_x2" if d == "F4" else a.dtype.name
        shape = list(a.shape[:-1]) + [a.shape[-1] // 2] if d == "F4" else list(a.shape)
        specs[k] = TensorSpec(dtype=name, shape=shape, data_ptr=buf.ctypes.data, data_len=buf.nbytes)
    safetensors.serialize_file(specs, path, metadata=metadata)


def same_float(a, b):
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    return a == b and math.copysign(1, a) == math.copysign(1, b)


def check(path, expect_path):
    with open(expect_path, encoding="utf-8") as f:
        expect = json.load(f)
    got = load_any(path)
    with safetensors.safe_open(path, framework="np") as f:
        assert f.metadata() == expect["metadata"], (f.metadata(), expect["metadata"])
    assert sorted(got) == sorted(t["name"] for t in expect["tensors"]), (sorted(got), expect["tensors"])
    n = 0
    for t in expect["tensors"]:
        dtype, arr = got[t["name"]]
        where = f"tensor {t['name']!r}"
        assert dtype == t["dtype"], (where, dtype, t["dtype"])
        assert list(arr.shape) == t["shape"], (where, arr.shape, t["shape"])
        flat = arr.ravel()
        if dtype == "BOOL":
            assert [bool(v) for v in flat] == t["values"], where
        elif dtype in INTS:
            assert [int(v) for v in flat] == [int(float.fromhex(h)) for h in t["values"]], where
        elif dtype == "C64":
            c = flat.astype(np.complex128)
            for v, re, im in zip(c, t["values"], t["imag"]):
                assert same_float(v.real, float.fromhex(re)) and same_float(v.imag, float.fromhex(im)), (where, v, re, im)
        else:
            vals = flat.astype(np.float64)
            for i, (v, h) in enumerate(zip(vals, t["values"])):
                assert same_float(float(v), float.fromhex(h)), (where, i, float(v), h)
        n += 1
    print(f"checked {n} tensors")


def resave(path, out, kv):
    key, value = kv.split("=", 1)
    save_any(load_any(path), out, {key: value})


def random_values(dtype, shape, rng):
    n = int(np.prod(shape, dtype=np.int64))
    if dtype == "BOOL":
        return rng.random(n) < 0.5
    if dtype in INTS:
        info = np.iinfo(NUMPY[dtype])
        # Within +-2^53, so R holds every value exactly and can write it back.
        lo, hi = max(int(info.min), -(2 ** 53)), min(int(info.max), 2 ** 53)
        return rng.integers(lo, hi, size=n, endpoint=True, dtype=np.int64 if lo < 0 else np.uint64)
    if dtype == "C64":
        return rng.standard_normal(n) + 1j * rng.standard_normal(n)
    if dtype == "F8_E8M0":
        return 2.0 ** rng.integers(-20, 20, size=n)
    if dtype == "F4":
        return rng.choice([0, 0.5, 1, 1.5, 2, 3, 4, 6, -0.5, -6, -0.0], size=n)
    vals = rng.standard_normal(n) * 4
    # Special values where the dtype has them.
    if n >= 4 and dtype in ("F16", "F32", "F64", "BF16"):
        vals[:4] = [np.nan, np.inf, -np.inf, -0.0]
    elif n >= 2 and dtype in ("F8_E4M3", "F8_E5M2"):
        vals[:2] = [np.nan, -0.0]
    return vals


def write(out, expect_path, seed, dtypes):
    rng = np.random.default_rng(int(seed))
    tensors = {}
    for d in dtypes:
        shapes = {"s": (), "v": (5,), "m": (3, 4), "a": (2, 3, 4), "e": (0,), "e3": (2, 0, 3)}
        if d == "F4":
            shapes = {"v": (6,), "m": (3, 4), "a": (2, 3, 4), "e": (0,), "e3": (2, 0, 4)}
        for k, shape in shapes.items():
            arr = np.asarray(random_values(d, shape, rng))
            with np.errstate(over="ignore", invalid="ignore"):
                tensors[f"{d}_{k}"] = (d, arr.astype(np_dtype(d)).reshape(shape).copy(order="C"))
    save_any(tensors, out, {"writer": "python"})
    desc = []
    for name, (d, arr) in tensors.items():
        flat = arr.ravel()
        t = {"name": name, "dtype": d, "shape": list(arr.shape)}
        if d == "BOOL":
            t["values"] = [bool(v) for v in flat]
        elif d in INTS:
            t["values"] = [str(int(v)) for v in flat]
            t["doubles"] = [float(int(v)).hex() for v in flat]
            t["int_min"] = d == "I32" and -(2 ** 31) in [int(v) for v in flat]
        elif d == "C64":
            c = flat.astype(np.complex128)
            t["values"] = [float(v).hex() for v in c.real]
            t["imag"] = [float(v).hex() for v in c.imag]
        else:
            t["values"] = [float(v).hex() for v in flat.astype(np.float64)]
        desc.append(t)
    with open(expect_path, "w", encoding="utf-8") as f:
        json.dump({"tensors": desc}, f)


if __name__ == "__main__":
    cmd, *args = sys.argv[1:]
    {"check": check, "resave": resave, "write": lambda o, e, s, *d: write(o, e, s, d)}[cmd](*args)
