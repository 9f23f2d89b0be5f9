"""Turns driver.py's results into the tables in bench/README.md.

    python report.py results.json README.md

Replaces the text between the lines `<!-- results:start -->` and
`<!-- results:end -->` (appending them if absent); the rest of README.md is
left as written.
"""

import json
import statistics
import sys

from driver import LOAD_CASES, SAVE_CASES, LIMIT_FILES

MiB = 1 << 20
START, END = "<!-- results:start -->", "<!-- results:end -->"


def med(runs, case, impl, key="time"):
    vals = [r[key] for r in runs if r["case"] == case and r["impl"] == impl and key in r]
    return (statistics.median(vals), len(vals)) if vals else (None, 0)


def growth(runs, case, impl):
    vals = [r["rss_peak"] - r["rss_base"] for r in runs if r["case"] == case and r["impl"] == impl and "error" not in r]
    return statistics.median(vals) if vals else None


def spread(runs, case, impl):
    vals = [r["time"] for r in runs if r["case"] == case and r["impl"] == impl and "error" not in r]
    return f"{min(vals):.3f}..{max(vals):.3f}" if vals else ""


def fmt_t(t):
    return "n/a" if t is None else (f"{t * 1000:.1f} ms" if t < 0.1 else f"{t:.3f} s")


def fmt_mb(b):
    return "n/a" if b is None else f"{b / MiB:.0f}"


def main():
    res_path, readme = sys.argv[1], sys.argv[2]
    with open(res_path) as f:
        res = json.load(f)
    runs, man, m = res["runs"], res["manifest"], res["machine"]
    out = [START, ""]
    out.append("### Machine and software")
    out.append("")
    out.append(f"- CPU: {m['cpu']}, {m['cores']} cores; memory {m['memory']}; Linux {m['kernel']}; THP `{m['thp']}`")
    out.append(f"- {m['r']}; Python {m['python']}, numpy {m['numpy']}, safetensors (Python) {m['safetensors_py']}; {m['rustc']}")
    out.append(f"- this package {m['ours']} (commit {m['ours_commit']}, release build)"
               + (f"; CRAN safetensors {m['cran']}" if m.get("cran") else "; CRAN 0.2.1 not measured"))
    out.append(f"- run {m['date']}; median of {res['reps']} runs per cell, each a fresh process, warm page cache")
    out.append("")

    out.append("### Targets: this package against Python's safetensors")
    out.append("")
    out.append("Ratio = this package's median wall time / Python's (both in fresh processes, "
               "same files, runs interleaved). CPU ratio = the same for CPU time (user + system, "
               "all threads), steadier than wall time on a shared machine. RSS = growth of peak RSS "
               "during the call (VmHWM after, reset just before, minus VmRSS before), MiB; its limit "
               "is the size of the returned R objects + 64 MiB for loads, 64 MiB for saves (whose "
               "input is already in memory).")
    out.append("")
    out.append("| case | data | Python | this package | ratio | target | met | CPU ratio | RSS (limit) | RSS Python |")
    out.append("|---|---|---|---|---|---|---|---|---|---|")
    others = []

    def row(case, what, data_bytes, target, limit_key, rss_limit):
        py, _ = med(runs, case, "py")
        ours, n = med(runs, case, "ours")
        cpy, _ = med(runs, case, "py", "cpu")
        cours, _ = med(runs, case, "ours", "cpu")
        one, _ = med(runs, case, "ours_1t")
        cran, _ = med(runs, case, "cran")
        lim = None
        if limit_key:
            cands = [med(runs, f"limit_{limit_key}", i)[0] for i in ("fromfile", "memcpy", "readbin")]
            cands = [c for c in cands if c is not None]
            lim = min(cands) if cands else None
        ratio = ours / py if ours and py else None
        met = "" if target is None or ratio is None else ("yes" if ratio <= target else "**no**")
        g_ours, g_py = growth(runs, case, "ours"), growth(runs, case, "py")
        rss_ok = ""
        if g_ours is not None and rss_limit is not None:
            rss_ok = " ok" if g_ours <= rss_limit else " **over**"
        gbs = "" if not ours else f" ({data_bytes / ours / 1e9:.2f} GB/s)"
        out.append(
            f"| {case} | {what}, {data_bytes / MiB:.0f} MiB | {fmt_t(py)} | {fmt_t(ours)}{gbs} | "
            f"{'' if ratio is None else f'{ratio:.2f}'} | {'' if target is None else f'<= {target}'} | {met} | "
            f"{'' if not (cpy and cours) else f'{cours / cpy:.2f}'} | "
            f"{fmt_mb(g_ours)} ({fmt_mb(rss_limit)}){rss_ok} | {fmt_mb(g_py)} |"
        )
        others.append(
            f"| {case} | {fmt_t(ours)} | {fmt_t(one)} | {fmt_t(cran)} | "
            f"{'' if not (cran and ours) else f'{cran / ours:.1f}x'} | {fmt_t(lim)} | "
            f"{'' if not (lim and ours) else f'{ours / lim:.2f}'} |"
        )

    for case, what, key, _, target in LOAD_CASES:
        outb = med(runs, case, "ours", "out_bytes")[0]
        row(case, what, man[key]["data_bytes"], target, key, None if outb is None else outb + 64 * MiB)
    key = "f64"
    row("open_one", f"open the F64 file, read one {man[key]['data_bytes'] / 16 / MiB:.0f} MiB tensor",
        man[key]["data_bytes"] / 16, 1.0, None, man[key]["data_bytes"] / 16 + 64 * MiB)
    for case, what, target in SAVE_CASES:
        nbytes = man["save"]["data_bytes"] // (1 if case == "save_f64" else 2)
        row(case, what + " (file size)", nbytes, target, None, 64 * MiB)
    out.append("")
    out.append("Spread (min..max seconds) of this package's runs: " + "; ".join(
        f"{c}: {spread(runs, c, 'ours')}" for c, *_ in LOAD_CASES + [("open_one",)] + SAVE_CASES) + ".")
    out.append("")
    out.append("### Other comparisons")
    out.append("")
    out.append("\"1 thread\" is the same call with `options(safetensors.threads = 1)`. CRAN 0.2.1 reads "
               "through a registered framework (compat.md 5.2): `\"raw\"` for U8, otherwise one that "
               "builds the same R arrays as this package (`readBin()` + `aperm()`); it writes plain "
               "arrays through `safe_tensor_meta()`/`safe_tensor_buffer()` methods, then `sync FILE`. "
               "The raw-copy limit is the fastest of the three copies of the same file in the next "
               "table.")
    out.append("")
    out.append("| case | this package | 1 thread | CRAN 0.2.1 | speed-up over CRAN | raw-copy limit | this package / limit |")
    out.append("|---|---|---|---|---|---|---|")
    out.extend(others)
    out.append("")

    out.append("### Raw-copy limits")
    out.append("")
    out.append("Each data file's bytes copied into fresh memory: `np.fromfile(path, uint8)`, "
               "`a.copy()` of those bytes (memcpy into fresh memory), and R's "
               "`readBin(path, \"raw\", file.size(path))`.")
    out.append("")
    out.append("| file | bytes | np.fromfile | fresh memcpy | R readBin |")
    out.append("|---|---|---|---|---|")
    for key in LIMIT_FILES:
        cells = []
        for impl in ("fromfile", "memcpy", "readbin"):
            t, _ = med(runs, f"limit_{key}", impl)
            cells.append("n/a" if t is None else f"{fmt_t(t)} ({man[key]['file_bytes'] / t / 1e9:.2f} GB/s)")
        out.append(f"| {key} | {man[key]['file_bytes'] / MiB:.0f} MiB | " + " | ".join(cells) + " |")
    out.append("")
    failed = [r for r in runs if "error" in r]
    if failed:
        out.append(f"{len(failed)} runs failed: " + ", ".join(sorted({r["case"] + "/" + r["impl"] for r in failed})))
        out.append("")
    out.append(END)
    block = "\n".join(out)

    try:
        with open(readme) as f:
            text = f.read()
    except FileNotFoundError:
        text = ""
    if START in text and END in text:
        text = text[: text.index(START)] + block + text[text.index(END) + len(END):]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    with open(readme, "w") as f:
        f.write(text)


if __name__ == "__main__":
    main()
