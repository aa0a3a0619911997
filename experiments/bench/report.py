"""The report of a run: Markdown tables, fitted slopes and cost model, the
acceptance targets, and the plot of time against pairs."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .cases import BATCH, BIG, HEADLINE, OUTPUT_BOUND, Case, case_from_dict
from .methods import COMPARATORS, LABELS
from .timing import AGREEMENT_TOL

# Below about this many pairs, fixed per-call and per-pixel costs dominate;
# the slope is also fitted above it.
SLOPE_MIN_PAIRS = 1e6


def _median(row: dict, method: str) -> float | None:
    return row["methods"].get(method, {}).get("median_s")


def fmt_time(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds:.4g}"


def _fmt_ratio(row: dict, method: str) -> str:
    entry = row["methods"].get(method)
    if entry is None:
        return "-"
    if "skipped" in entry:
        return f"skipped ({entry['skipped']})"
    return f"{entry['median_s'] / _median(row, 'jax_gmm'):.3g}x"


def fitted_slope(rows: Sequence[dict], mode: str, min_pairs: float = 0) -> float | None:
    """Least-squares slope of log(time) against log(pairs) for jax_gmm, over
    the cases of `mode` with at least `min_pairs` pairs; None unless their
    pair counts span at least a factor of 10."""
    pts = [(r["pairs"], _median(r, "jax_gmm")) for r in rows
           if r["case"]["mode"] == mode and r["pairs"] >= max(min_pairs, 1)]
    x, y = np.log10(np.array(pts, np.float64).reshape(-1, 2)).T
    if len(pts) < 2 or x.max() - x.min() < 1:
        return None
    return float(np.polyfit(x, y, 1)[0])


def cost_model(rows: Sequence[dict], mode: str) -> dict[str, float] | None:
    """Least-squares fit of jax_gmm's time as a sum of per-item costs,
    t = a * points + b * pairs + c * pixels (each summed over the batch), in
    nanoseconds per item: why time is not a function of pairs alone. None
    with fewer than 4 cases."""
    picked = [r for r in rows if r["case"]["mode"] == mode]
    if len(picked) < 4:
        return None
    counts = np.array([[r["case"]["batch"] * r["case"]["points"], r["pairs"],
                        r["case"]["batch"] * r["case"]["height"] * r["case"]["width"]]
                       for r in picked], np.float64)
    times = np.array([_median(r, "jax_gmm") for r in picked])
    # Relative residuals, so that the small cases count as much as the large.
    coef = np.linalg.lstsq(counts / times[:, None], np.ones(len(picked)), rcond=None)[0]
    return dict(zip(("ns_per_point", "ns_per_pair", "ns_per_pixel"), (coef * 1e9).tolist()))


def _fmt_slope(slope: float | None) -> str:
    return "n/a (pairs span < 10x)" if slope is None else f"{slope:.2f}"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A GitHub Markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def timing_table(rows: Sequence[dict]) -> str:
    """Markdown: one line per case, jax_gmm then each comparator's time and ratio
    (only the comparators that some case tried)."""
    tried = [m for m in COMPARATORS if any(m in r["methods"] for r in rows)]
    header = ["case", "mode", "pairs", "jax_gmm s", "pairs/s"]
    for method in tried:
        header += [f"{LABELS[method]} s", f"{LABELS[method]} / jax_gmm"]
    lines = []
    for row in rows:
        t = _median(row, "jax_gmm")
        cells = [row["label"], row["case"]["mode"], f"{row['pairs']:.3g}", fmt_time(t),
                 f"{row['pairs'] / t:.3g}"]
        for method in tried:
            cells += [fmt_time(_median(row, method)), _fmt_ratio(row, method)]
        lines.append(cells)
    return _table(header, lines)


def _memory_cells(r: dict) -> list[str]:
    if "error" in r:
        return [f"failed: {r['error']}", "", "", ""]
    device = "-" if r["device_peak_mib"] is None else f"{r['device_peak_mib']:.0f}"
    return [f"{r['rss_peak_mib']:.0f}", f"{r['rss_before_mib']:.0f}",
            f"{r['rss_peak_mib'] - r['rss_before_mib']:.0f}", device]


def memory_table(rows: Sequence[dict]) -> str:
    """Markdown: peak memory per (case, method)."""
    header = ["case", "mode", "method", "peak RSS MiB", "RSS before call MiB", "added MiB",
              "device peak MiB"]
    return _table(header, [[r["label"], r["case"]["mode"], r["method"], *_memory_cells(r)]
                           for r in rows])


def threads_table(rows: Sequence[dict], cores: int) -> str:
    """Markdown: jax_gmm with one thread and with all of them."""
    header = ["case", "mode", "1 thread s", f"{cores} threads s", "speed-up"]
    return _table(header, [[r["label"], r["case"]["mode"], fmt_time(r["one_thread_s"]),
                            fmt_time(r["all_threads_s"]),
                            "-" if r["speedup"] is None else f"{r['speedup']:.2f}x"]
                           for r in rows])


def _same_config(case: dict, reference: Case) -> bool:
    """`case` (as a dict) is `reference` in either mode, with any comparators."""
    other = dataclasses.replace(case_from_dict(case), mode=reference.mode,
                                comparators=reference.comparators)
    return other == reference


def _speed_targets(rows: Sequence[dict], floor: dict, pause_s: float) -> list[str]:
    lines = []
    for row in rows:
        if _same_config(row["case"], HEADLINE):
            tails = ", ".join(f"{LABELS.get(m, m)} {v['tail_cpu_s'] * 1e3:.1f} ms"
                              for m, v in row["methods"].items() if "tail_cpu_s" in v)
            left = (f"; CPU time left behind after a call (in the {pause_s * 1e3:.0f} ms "
                    f"pause): {tails}" if pause_s else "; no pause between calls")
            lines.append(f"- {row['label']}, {row['case']['mode']}: jax_gmm "
                         f"{fmt_time(_median(row, 'jax_gmm'))} s, (a) "
                         f"{fmt_time(_median(row, 'scatter'))} s: (a) / jax_gmm = "
                         f"{_fmt_ratio(row, 'scatter')} (target >= 20x){left}")
        if _same_config(row["case"], OUTPUT_BOUND) and _median(row, "fill"):
            lines.append(f"- {row['label']}, output-bound: jax_gmm "
                         f"{fmt_time(_median(row, 'jax_gmm'))} s, (d) XLA fill "
                         f"{fmt_time(_median(row, 'fill'))} s: jax_gmm / (d) = "
                         f"{_median(row, 'jax_gmm') / _median(row, 'fill'):.2f} (target <= 1.2)")
        if _same_config(row["case"], BATCH) and _median(row, "loop"):
            lines.append(f"- {row['label']}, {row['case']['mode']}: jax_gmm (vmap) "
                         f"{fmt_time(_median(row, 'jax_gmm'))} s, loop of single-image calls "
                         f"{fmt_time(_median(row, 'loop'))} s: loop / vmap = "
                         f"{_fmt_ratio(row, 'loop')} (target >= 2x)"
                         + (f"; (d) XLA writing the same output {fmt_time(_median(row, 'fill'))}"
                            f" s: vmap / (d) = "
                            f"{_median(row, 'jax_gmm') / _median(row, 'fill'):.2f}"
                            if _median(row, "fill") else ""))
    forward = [r for r in rows if r["case"]["mode"] == "forward" and r["pairs"]]
    if floor.get("pairs_per_s") and forward:
        best = max(forward, key=lambda r: r["pairs"] / _median(r, "jax_gmm"))
        headline = [r for r in forward if _same_config(r["case"], HEADLINE)]
        picked = [("best", best)] + [("headline", r) for r in headline if r is not best]
        for what, row in picked:
            rate = row["pairs"] / _median(row, "jax_gmm")
            shares = ", ".join(f"{rate / v:.3f} of the {k} floor"
                               for k, v in floor["pairs_per_s"].items())
            lines.append(f"- {what} forward throughput {rate:.3g} pairs/s ({row['label']}): "
                         f"{shares} (target >= 1/3)")
    return lines


def _memory_targets(memory: Sequence[dict]) -> list[str]:
    lines = []
    for r in memory:
        if _same_config(r["case"], BIG) and "error" not in r:
            target = " (target < 2048 MiB)" if r["method"] == "jax_gmm" else ""
            lines.append(f"- {r['label']}, {r['case']['mode']}: {r['method']} peak RSS "
                         f"{r['rss_peak_mib']:.0f} MiB{target}")
    return lines


def targets(results: dict) -> list[str]:
    """The issue's acceptance numbers, from this run's measurements."""
    cores = results["environment"]["cores"]
    return [*_speed_targets(results["rows"], results["floor"], results["pause_s"]),
            *_memory_targets(results["memory"]),
            *(f"- 1 -> {cores} threads: {r['speedup']:.2f}x ({r['label']}, {r['case']['mode']})"
              for r in results["threads"] if r["speedup"])]


def markdown(results: dict) -> str:
    """The whole report."""
    env = results["environment"]
    floor = results["floor"]
    floor_text = ("not measured" if not floor else floor["error"] if "error" in floor else
                  ", ".join(f"{k}: {v:.3g} pairs/s" for k, v in floor["pairs_per_s"].items())
                  + f" (C={floor['channels']}, {floor['threads']} threads)")
    costs = "; ".join(f"{mode}: " + ", ".join(f"{v:.3g} {k.replace('_', ' ')}"
                                             for k, v in fit.items())
                      for mode, fit in results["cost_model"].items() if fit)
    slopes = "; ".join(f"{mode}: {_fmt_slope(fits['all'])} over all cases, "
                       f"{_fmt_slope(fits['large'])} over those with >= {SLOPE_MIN_PAIRS:g} pairs"
                       for mode, fits in results["slopes"].items())
    return "\n".join([
        f"# jax_gmm benchmark: {results['preset']} preset on {env['platform']}",
        "",
        f"{env['device']} / CPU {env['cpu']}, {env['cores']} cores; python {env['python']}, "
        f"jax {env['jax']}, jaxlib {env['jaxlib']}; jax_gmm native kernels: "
        + ", ".join(f"{p}: {f or 'none'}" for p, f in env["jax_gmm_native"].items())
        + f" (CPU kernel in use: {env['jax_gmm_cpu_kernel'] or 'none'})"
        + f"; {env['date']}; whole run {results['elapsed_s']:.0f} s; load average "
        f"{env['load_average']:.1f} at the start, {results['load_average_end']:.1f} at the end.",
        *([] if env["native_here"] else
          ["", f"**No native jax_gmm kernel on {env['platform']}: jax_gmm ran its pure-JAX "
           "reference.**"]),
        "",
        "Median seconds per call after one warm-up call; comparators alternate with jax_gmm, "
        + (f"with an untimed {results['pause_s'] * 1e3:.0f} ms pause after every call (see the "
           "targets for the CPU work each method leaves behind during it), "
           if results["pause_s"] else "call after call with no pause (each call pays for the "
           "work the one before left behind), ")
        + f"and agree with it to {AGREEMENT_TOL:g} relative before they are timed (griddata is "
        "another interpolant and (d) writes zeros: neither is compared). pairs: exact count "
        "of (point, pixel) pairs inside the cutoff, summed over the batch; pairs/s is "
        "jax_gmm's. value_and_grad "
        "differentiates sum(out * cotangent) in points, values and sigma. Ratios are the "
        "comparator's time over jax_gmm's.",
        "",
        "## Timings",
        "",
        timing_table(results["rows"]),
        "",
        "## Peak memory (fresh process per line)",
        "",
        memory_table(results["memory"]) if results["memory"] else "not measured",
        "",
        "## Threads (jax_gmm, JAX_GMM_NUM_THREADS=1 vs all)",
        "",
        threads_table(results["threads"], env["cores"]) if results["threads"] else "not measured",
        "",
        f"## Throughput floor (experiments/floor/floor.cc)\n\n{floor_text}",
        "",
        "## Scaling",
        "",
        (f"Plot not drawn: {results['plot_missing']}." if results["plot_missing"] else
         f"![time against pairs]({results['plot']})") + " Fitted log-log slopes of jax_gmm time "
        f"against pairs: {slopes}. Least-squares split of jax_gmm's time into costs per "
        f"point, per pair and per output pixel (relative residuals): {costs or 'too few cases'}.",
        "",
        "## Targets",
        "",
        *targets(results),
        "",
    ])


def plot(rows: Sequence[dict], path: Path) -> str | None:
    """Draws log-log time against pairs inside the cutoff, jax_gmm and (a),
    with a slope-1 guide, into `path`; returns why not where it cannot."""
    try:
        import matplotlib
    except ImportError:
        return "matplotlib is not installed"

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 5))
    for mode, marker in (("forward", "o"), ("value_and_grad", "s")):
        for method, fill in (("jax_gmm", None), ("scatter", "none")):
            pts = [(r["pairs"], _median(r, method)) for r in rows
                   if r["case"]["mode"] == mode and r["pairs"] and _median(r, method)]
            if pts:
                x, y = zip(*pts)
                ax.loglog(x, y, marker, fillstyle=fill or "full", label=f"{method}, {mode}")
    timed = [(r["pairs"], _median(r, "jax_gmm")) for r in rows if r["pairs"]]
    x = np.array([p for p, _ in timed], np.float64)
    anchor = np.exp(np.mean(np.log([t / p for p, t in timed])))
    guide = np.array([x.min(), x.max()])
    ax.loglog(guide, anchor * guide, "k--", lw=1, label="slope 1")
    ax.set_xlabel("(point, pixel) pairs inside the cutoff")
    ax.set_ylabel("seconds per call (median)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return None
