"""numpy's and ml_dtypes' conversions, the oracle of test-dtype-oracle.R.

    python3 dtype-oracle.py DIR values   # DIR/input.f64 -> DIR/<dtype>.f64 and .err
    python3 dtype-oracle.py DIR codes    # every code of the small dtypes, boundary
                                         # codes of the others -> DIR/codes.json

values: each double of input.f64 converted to every float dtype by
ml_dtypes (numpy for F16 and F32), read back as a double, and whether
the package must refuse it instead: a value that rounds past the largest
one (ml_dtypes saturates F6 and F4, and makes NaN of overflows where
there is no infinity; the package refuses them), NaN where the dtype has
no NaN, an infinity where it has none, and for F8_E8M0 (no zero) zero,
negatives and values that round below 2^-127.

codes: for each float dtype, codes (one element each, unpacked) and the
doubles they stand for (as 64-bit patterns, in hexadecimal); for each
integer dtype, the codes' bytes as stored (little-endian, in hexadecimal)
and the integers they stand for (in decimal).
"""

import json
import sys

import ml_dtypes as m
import numpy as np

FLOATS = {
    "F16": np.float16,
    "BF16": m.bfloat16,
    "F8_E5M2": m.float8_e5m2,
    "F8_E4M3": m.float8_e4m3fn,
    "F8_E4M3FNUZ": m.float8_e4m3fnuz,
    "F8_E5M2FNUZ": m.float8_e5m2fnuz,
    "F8_E8M0": m.float8_e8m0fnu,
    "F6_E2M3": m.float6_e2m3fn,
    "F6_E3M2": m.float6_e3m2fn,
    "F4": m.float4_e2m1fn,
    "F32": np.float32,
}
HAS_INF = {"F16", "BF16", "F8_E5M2", "F32"}
NO_NAN = {"F6_E2M3", "F6_E3M2", "F4"}
BITS = {"F6_E2M3": 6, "F6_E3M2": 6, "F4": 4}
INTS = {"I8": np.int8, "U8": np.uint8, "I16": np.int16, "U16": np.uint16,
        "I32": np.int32, "U32": np.uint32, "I64": np.int64, "U64": np.uint64}


def code_dtype(bits):
    return {8: np.uint8, 16: np.uint16, 32: np.uint32, 64: np.uint64}[bits]


def top(t, name):
    """The largest value, the spacing below it, and whether its code is odd."""
    mx = float(m.finfo(t).max) if t not in (np.float16, np.float32) else float(np.finfo(t).max)
    bits = BITS.get(name, np.dtype(t).itemsize * 8)
    cd = code_dtype(max(8, bits))
    code = int(np.array([mx], dtype=t).view(cd)[0])
    prev = float(np.array([code - 1], dtype=cd).view(t).astype(np.float64)[0])
    return mx, mx - prev, code % 2 == 1


def values(d):
    x = np.fromfile(d + "/input.f64", dtype="<f8")
    for name, t in FLOATS.items():
        with np.errstate(all="ignore"):
            back = x.astype(t).astype(np.float64)
        a = np.abs(x)
        finite = np.isfinite(x)
        if name == "F8_E8M0":
            err = (~(x > 0)) | ~finite | (x < 1.5 * 2.0 ** -128) | (x >= 1.5 * 2.0 ** 127)
            err &= ~np.isnan(x)
        else:
            mx, step, odd = top(t, name)
            mid = mx + step / 2
            err = finite & ((a > mid) | ((a == mid) & odd))
            if name not in HAS_INF:
                err |= np.isinf(x)
            if name in NO_NAN:
                err |= np.isnan(x)
        back.astype("<f8").tofile("%s/%s.f64" % (d, name))
        err.astype(np.uint8).tofile("%s/%s.err" % (d, name))


def codes(d):
    rng = np.random.default_rng(7)
    out = {}
    for name, t in FLOATS.items():
        bits = BITS.get(name, np.dtype(t).itemsize * 8)
        cd = code_dtype(max(8, bits))
        if bits <= 16:
            c = np.arange(2 ** bits, dtype=np.uint64).astype(cd)
        else:
            special = [0, 1, 0x7F7FFFFF, 0x7F800000, 0x7FC00000, 0x7F800001, 0x00800000, 0x007FFFFF, 0x3F800000, 0x80000000]
            c = np.concatenate([np.array(special, dtype=cd), rng.integers(0, 2 ** 32, 4000, dtype=np.uint64).astype(cd)])
            c = np.concatenate([c, c | np.uint32(0x80000000)])
        v = c.view(t).astype(np.float64) if bits >= 8 else c.view(t).astype(np.float64)
        out[name] = {"codes": [int(i) for i in c], "values": ["%016x" % int(b) for b in v.view(np.uint64)]}
    for name, t in INTS.items():
        bits = np.dtype(t).itemsize * 8
        cd = code_dtype(bits)
        if bits <= 16:
            c = np.arange(2 ** bits, dtype=np.uint64).astype(cd)
        else:
            edges = [0, 1, 2, 2 ** (bits - 1) - 1, 2 ** (bits - 1), 2 ** (bits - 1) + 1, 2 ** bits - 1, 2 ** bits - 2]
            if bits == 64:
                edges += [2 ** 53, 2 ** 53 + 1, 2 ** 64 - 2 ** 53 - 1, 2 ** 63 + 2 ** 11]
            c = np.concatenate([np.array(edges, dtype=np.uint64).astype(cd), rng.integers(0, 2 ** 63, 2000, dtype=np.uint64).astype(cd)])
        vals = c.view(t)
        out[name] = {"bytes": c.astype(np.dtype(cd).newbyteorder("<")).tobytes().hex(), "values": [str(int(i)) for i in vals]}
    with open(d + "/codes.json", "w") as f:
        json.dump(out, f)


if __name__ == "__main__":
    {"values": values, "codes": codes}[sys.argv[2]](sys.argv[1])
