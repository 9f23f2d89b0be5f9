"""Turns driver.py's results into the tables in bench/README.md.

    python report.py results.json README.md

Replaces the text between the lines `<!-- results:start -->` and
`<!-- results:end -->` (appending them if absent); the rest of README.md is
left as written. Results with "base" runs (run.sh's BENCH_BASE_LIB) get a
table more: this package against that older build of itself.
"""

import json
import statistics
import sys

from driver import LOAD_CASES, SAVE_CASES, LIMIT_FILES, TORCH_CASES

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


def times(runs, case, impl):
    return [r["time"] for r in runs if r["case"] == case and r["impl"] == impl and "error" not in r]


def gated(runs, case, impl):
    """Median time without R's garbage collections during the call (the
    "gc" of case.R; none for Python or older results), which ratios are
    gated on, and the median of those collections."""
    rs = [r for r in runs if r["case"] == case and r["impl"] == impl and "error" not in r]
    if not rs:
        return None, None
    return (statistics.median(r["time"] - r.get("gc", 0) for r in rs),
            statistics.median(r.get("gc", 0) for r in rs))


def fmt_gc(g):
    return "" if not g else f"; R gc {fmt_t(g)}"


# An A/B difference counts only with this many runs of each build.
AB_MIN_RUNS = 3


def ab_verdict(base, ours):
    """(ratio, noise band, verdict) for the runs' times of the two builds.

    The noise band is the run-to-run spread of both builds, each relative to
    its own median: from the smaller of min/median over the two to the
    larger of max/median. The ratio of the medians (ours / base) is beyond
    noise when it lies outside that band.
    """
    mb, mo = statistics.median(base), statistics.median(ours)
    ratio = mo / mb
    lo = min(min(base) / mb, min(ours) / mo)
    hi = max(max(base) / mb, max(ours) / mo)
    if min(len(base), len(ours)) < AB_MIN_RUNS:
        verdict = "too few runs"
    elif ratio < lo:
        verdict = "**faster**"
    elif ratio > hi:
        verdict = "**slower**"
    else:
        verdict = "within noise"
    return ratio, (lo, hi), verdict


def ab_table(runs, m, cases):
    out = []
    label = f" ({m['base_label']})" if m.get("base_label") else ""
    out.append(f"### Before and after: this package against its baseline{label}")
    out.append("")
    out.append(
        f"\"base\" is an older release build of this package (version {m.get('base') or '?'}"
        + (f", {m['base_label']}" if m.get("base_label") else "") + "), "
        
        "run with exactly the cases and commands of \"this package\" (the current build), each run "
        "a fresh process, the two builds' runs next to each other in the same rounds (each case's runs "
        "take turns in each place from round to round), same data files. Times are the call's wall time "
        "as in the tables below, medians of the runs. Ratio = this package / base: below 1 is "
        "faster. Noise band: the run-to-run spread of both builds, each relative to its own "
        "median, from the smaller min/median of the two to the larger max/median. A difference "
        "counts (\"faster\", \"slower\") only if the ratio lies outside that band, i.e. it is "
        "larger than the spread either build shows from run to run on its own, and each build "
        f"has at least {AB_MIN_RUNS} runs; otherwise \"within noise\". CPU ratio = the same ratio "
        "for CPU time (user + system, all threads). RSS = median growth of peak RSS during the "
        "call, MiB.")
    out.append("")
    out.append("| case | base | this package | ratio | noise band | difference | CPU ratio | "
               "base min..max (s) | this package min..max (s) | RSS base -> this package |")
    out.append("|---|---|---|---|---|---|---|---|---|---|")
    counts = {}
    for case in cases:
        b, o = times(runs, case, "base"), times(runs, case, "ours")
        if not b and not o:
            continue
        if not (b and o):
            out.append(f"| {case} | {fmt_t(statistics.median(b)) if b else 'n/a'} | "
                       f"{fmt_t(statistics.median(o)) if o else 'n/a'} |  |  | no runs to compare |  |  |  |  |")
            continue
        ratio, (lo, hi), verdict = ab_verdict(b, o)
        counts[verdict] = counts.get(verdict, 0) + 1
        cb, co = med(runs, case, "base", "cpu")[0], med(runs, case, "ours", "cpu")[0]
        out.append(
            f"| {case} | {fmt_t(statistics.median(b))} | {fmt_t(statistics.median(o))} | {ratio:.2f} | "
            f"{lo:.2f}..{hi:.2f} | {verdict} | {'' if not (cb and co) else f'{co / cb:.2f}'} | "
            f"{spread(runs, case, 'base')} | {spread(runs, case, 'ours')} | "
            f"{fmt_mb(growth(runs, case, 'base'))} -> {fmt_mb(growth(runs, case, 'ours'))} |")
    out.append("")
    if counts:
        out.append("Cases: " + ", ".join(f"{n} {v.strip('*')}" for v, n in sorted(counts.items())) + ".")
        out.append("")
    return out


def torch_table(runs, man, res):
    """The torch cases (issue 22): this package against Python's
    safetensors.torch, or torch_load() against safe_load_file()."""
    out = ["### torch users' paths: this package against Python's safetensors.torch", ""]
    if "torch" not in man:
        out += [f"Not measured: {res.get('torch_skipped', 'no torch')}.", ""]
        return out
    m = res["machine"]
    out.append(
        f"R torch {m.get('torch_r', '?')} and Python torch {m.get('torch_python', '?')}, on the same files "
        "(written by `bench/gen-torch.R`), every call with the package's defaults. Python's loads are "
        "`load_file()` followed by `clone()` of every tensor, so both sides end with the data in process "
        "memory; its model load is `load_model(strict = False)` per shard into the same module. Ratio = "
        "this package's median wall time / the reference's (Python, or for `torch_load()` the "
        "`safe_load_file()` of the same file), both without R's garbage collections during the call "
        "(`gc.time()`; their median is shown as \"R gc\" where there were any). RSS = growth of peak RSS during the call, MiB; its limit is "
        "the result + 64 MiB for loads, 64 MiB beyond the module (built before the call) for "
        "`safe_load_model()` and beyond the tensors for saves.")
    out.append("")
    if m.get("torch_run"):
        out += [f"These rows come from a later run than the tables above: {m['torch_run']}.", ""]
    out.append("| case | what | reference | this package (min..max) | ratio | target | met | CPU ratio | RSS (limit) | RSS Python |")
    out.append("|---|---|---|---|---|---|---|---|---|---|")
    for case, what, _, _, against, target in TORCH_CASES:
        ours = times(runs, case, "ours")
        if not ours:
            continue
        ref_case, ref_impl = (case, "py") if against == "py" else (against, "ours")
        ref = times(runs, ref_case, ref_impl) if against else []
        o = statistics.median(ours)
        og, gc = gated(runs, case, "ours")
        r = gated(runs, ref_case, ref_impl)[0] if ref else None
        ratio = og / r if r else None
        met = "" if target is None or ratio is None else ("yes" if ratio <= target else "**no**")
        co, cr = med(runs, case, "ours", "cpu")[0], med(runs, ref_case, ref_impl, "cpu")[0] if against else None
        g = growth(runs, case, "ours")
        outb = med(runs, case, "ours", "out_bytes")[0] or 0
        limit = outb + 64 * MiB
        rss_ok = "" if g is None else (" ok" if g <= limit else " **over**")
        out.append(
            f"| {case} | {what} | {fmt_t(r) + (' (' + ref_case + ')' if against and against != 'py' else '') if r else ''} | "
            f"{fmt_t(o)} ({spread(runs, case, 'ours')}{fmt_gc(gc)}) | {'' if ratio is None else f'{ratio:.2f}'} | "
            f"{'' if target is None else f'<= {target}'} | {met} | {'' if not (co and cr) else f'{co / cr:.2f}'} | "
            f"{fmt_mb(g)} ({fmt_mb(limit)}){rss_ok} | {fmt_mb(growth(runs, case, 'py')) if against == 'py' else ''} |")
    out.append("")
    return out


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
    if m.get("base"):
        out.append(f"- baseline (\"base\"): this package {m['base']}"
                   + (f" ({m['base_label']})" if m.get("base_label") else "")
                   + f", from the library {m.get('base_lib', '?')}")
    out.append(f"- run {m['date']}; median of {res['reps']} runs per cell, each a fresh process, warm page cache")
    out.append("")

    if any(r["impl"] == "base" for r in runs):
        out.extend(ab_table(runs, m, [c for c, *_ in LOAD_CASES] + ["open_one"] + [c for c, *_ in SAVE_CASES]
                            + [c for c, *_ in TORCH_CASES]))

    out.append("### Targets: this package against Python's safetensors")
    out.append("")
    out.append("Ratio = this package's median wall time / Python's (both in fresh processes, "
               "same files, runs interleaved), this package's without R's garbage collections "
               "during the call (`gc.time()`; their median is shown as \"R gc\" where there were "
               "any: a fresh session's first large R vector costs one). CPU ratio = the same for CPU time (user + system, "
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
        ours_g, gc = gated(runs, case, "ours")
        cpy, _ = med(runs, case, "py", "cpu")
        cours, _ = med(runs, case, "ours", "cpu")
        one, _ = med(runs, case, "ours_1t")
        cran, _ = med(runs, case, "cran")
        lim = None
        if limit_key:
            cands = [med(runs, f"limit_{limit_key}", i)[0] for i in ("fromfile", "memcpy", "readbin")]
            cands = [c for c in cands if c is not None]
            lim = min(cands) if cands else None
        ratio = ours_g / py if ours_g and py else None
        met = "" if target is None or ratio is None else ("yes" if ratio <= target else "**no**")
        g_ours, g_py = growth(runs, case, "ours"), growth(runs, case, "py")
        rss_ok = ""
        if g_ours is not None and rss_limit is not None:
            rss_ok = " ok" if g_ours <= rss_limit else " **over**"
        gbs = "" if not ours else f" ({data_bytes / ours / 1e9:.2f} GB/s)"
        out.append(
            f"| {case} | {what}, {data_bytes / MiB:.0f} MiB | {fmt_t(py)} | {fmt_t(ours)}{gbs}{fmt_gc(gc).replace('; ', ' ')} | "
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

    out.extend(torch_table(runs, man, res))

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
