"""The report: medians and ranges over repetitions, Corridor's ratios to each reference,
the Markdown tables and the plot."""

from __future__ import annotations

import statistics
from pathlib import Path

from benches.forwarding.routers import ROUTERS
from benches.harness.cpu import describe_stalls
from benches.harness.traffic import PDR_LOSS

METRICS = (("ndr_pps", "NDR"), ("pdr_pps", "PDR"), ("max_fwd_pps", "max fwd"))
REFERENCES = ("kernel", "xdp_fwd", "afxdp_ref", "afxdp_ref-rt", "l3fwd")


def summarize(rows: list[dict]) -> list[dict]:
    """Median, min and max over repetitions, and Corridor's ratios to every reference for
    every rate (NDR, PDR, highest forwarded)."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["router"], r["family"], r["size"]), []).append(r)
    out = []
    for (router, family, size), rs in groups.items():
        s = {"router": router, "family": family, "size": size, "reps": len(rs)}
        if any("error" in r for r in rs):
            s["error"] = next(r["error"] for r in rs if "error" in r)
            out.append(s)
            continue
        for key in ("ndr_pps", "pdr_pps", "max_fwd_pps", "cpu", "p50_us", "p99_us"):
            vals = [r[key] for r in rs if r.get(key) is not None]
            if vals:
                s[key] = statistics.median(vals)
                s[key + "_min"], s[key + "_max"] = min(vals), max(vals)
        s["max_lost_at"] = rs[len(rs) // 2].get("max_lost_at", "")
        s["latency_at"] = rs[len(rs) // 2].get("latency_at", "")
        out.append(s)
    by = {(s["router"], s["family"], s["size"]): s for s in out}
    for s in out:
        if not s["router"].startswith("corridor") or "error" in s:
            continue
        for ref in REFERENCES:
            r = by.get((ref, s["family"], s["size"]), {})
            for key, _ in METRICS:
                if r.get(key) and key in s:
                    s[f"x_{ref}_{key}"] = s[key] / r[key]
    return out


def paired(rows: list[dict], base: str = "corridor-1") -> list[dict]:
    """Each other Corridor build against `base` repetition by repetition (the two ran
    back to back, in alternating order): the median, min and max of the per-repetition
    ratios of every rate. Pairing cancels most of a shared machine's drift between
    repetitions, which a ratio of medians keeps. A build that found no rate in a
    repetition (NDR 0: even the lowest trial lost frames) counts as 0x there rather than
    dropping out, which would flatter it; only a base of 0 leaves the pair out."""
    by = {(r["router"], r["family"], r["size"], r["rep"]): r for r in rows if "error" not in r}
    out = []
    for router in dict.fromkeys(r["router"] for r in rows):
        if router == base or not router.startswith("corridor"):
            continue
        for family, size in dict.fromkeys((r["family"], r["size"]) for r in rows):
            s: dict = {"router": router, "base": base, "family": family, "size": size}
            for key, _ in METRICS:
                ratios = []
                for (name, f, z, rep), r in by.items():
                    b = by.get((base, f, z, rep))
                    if (name, f, z) == (router, family, size) and b and b.get(key) and key in r:
                        ratios.append(r[key] / b[key])
                if ratios:
                    s[key] = statistics.median(ratios)
                    s[key + "_min"], s[key + "_max"] = min(ratios), max(ratios)
                    s["pairs"] = len(ratios)
            if "pairs" in s:
                out.append(s)
    return out


def judged(per_load: int) -> str:
    """How a rate was judged within a loss or not."""
    if per_load == 1:
        return "Each rate judged by one trial."
    return (
        f"Each rate judged by the majority of up to {per_load} trials (MLRsearch's goal "
        "exceed ratio 0.5): one stalled trial does not move the search."
    )


def markdown(summary: list[dict], meta: dict) -> str:
    def mpps(s: dict, key: str) -> str:
        if key not in s:
            return "-"
        if s["reps"] > 1:
            return f"{s[key] / 1e6:.3f} ({s[key + '_min'] / 1e6:.3f}-{s[key + '_max'] / 1e6:.3f})"
        return f"{s[key] / 1e6:.3f}"

    def num(s: dict, key: str, fmt: str) -> str:
        return format(s[key], fmt) if s.get(key) is not None else "-"

    stalls = []
    if "load_average" in meta:
        stalls.append("Load average (1, 5, 15 min) at the end: "
                      + ", ".join(f"{x:.2f}" for x in meta["load_average"]) + ".")  # fmt: skip
    if "router_cpu_stalls" in meta:
        stalls.append(
            f"Router CPU before the routers ran: {describe_stalls(meta['router_cpu_stalls'])}."
        )

    lines = [
        f"Forwarding benchmark, {meta['date']}, mode {meta['mode']}, "
        f"{meta['reps']} repetition(s) (median, min-max), trials of {meta['trial_s']} s.",
        f"Machine: {meta['machine']}. Table: {meta['table']}.",
        f"Topology: {meta.get('topology', 'lab')}.",
        f"Placement: {meta['placement']}",
        *stalls,
        "",
        f"NDR: highest rate with no loss (RFC 2544 26.1); PDR: loss at most {PDR_LOSS:.1%}; "
        "max fwd: rate at the sink when the generator runs flat out (with where the rest "
        "was lost). Rates in Mpps, latency at half the NDR.",
        judged(meta.get("per_load", 1)),
        "",
        "| router | family | frame (B) | NDR | PDR | max fwd | lost at (max) | router CPU "
        "| p50 µs | p99 µs |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for s in summary:
        if "error" in s:
            lines.append(f"| {s['router']} | IPv{s['family']} | {s['size']} | not measured: "
                         f"{s['error']} | | | | | | |")  # fmt: skip
            continue
        lat = "" if s.get("latency_at", "NDR/2") in ("NDR/2", "") else f" ({s['latency_at']})"
        lines.append(
            f"| {s['router']} | IPv{s['family']} | {s['size']} | {mpps(s, 'ndr_pps')} | "
            f"{mpps(s, 'pdr_pps')} | {mpps(s, 'max_fwd_pps')} | {s.get('max_lost_at', '')} | "
            f"{num(s, 'cpu', '.0%')} | {num(s, 'p50_us', '.1f')}{lat} | "
            f"{num(s, 'p99_us', '.1f')} |"
        )
    corridor = [s for s in summary if s["router"].startswith("corridor") and "error" not in s]
    if corridor:
        lines += ["", "Corridor as a ratio to each reference, same run "
                  "(NDR / PDR / max fwd):", "",
                  "| router | family | frame (B) | "
                  + " | ".join(f"x {ref}" for ref in REFERENCES) + " |",
                  "|---|---|---|" + "---|" * len(REFERENCES)]  # fmt: skip
        for s in corridor:
            cells = []
            for ref in REFERENCES:
                vals = [s.get(f"x_{ref}_{key}") for key, _ in METRICS]
                cells.append(" / ".join("-" if v is None else f"{v:.2f}" for v in vals))
            lines.append(f"| {s['router']} | IPv{s['family']} | {s['size']} | "
                         + " | ".join(cells) + " |")  # fmt: skip
    if meta.get("paired"):
        lines += ["", "Rep by rep against the build it varies (the two back to back, order "
                  "alternating): median (min-max) of the per-repetition ratios:", "",
                  "| router | against | family | frame (B) | pairs | NDR | PDR | max fwd |",
                  "|---|---|---|---|---|---|---|---|"]  # fmt: skip
        for s in meta["paired"]:
            cells = [f"{s[k]:.2f} ({s[k + '_min']:.2f}-{s[k + '_max']:.2f})" if k in s else "-"
                     for k, _ in METRICS]  # fmt: skip
            lines.append(f"| {s['router']} | {s['base']} | IPv{s['family']} | {s['size']} | "
                         f"{s['pairs']} | " + " | ".join(cells) + " |")  # fmt: skip
    return "\n".join(lines) + "\n"


# Okabe and Ito's palette: told apart with every common colour-vision deficiency.
PALETTE = ("#E69F00", "#56B4E9", "#009E73", "#F0E442", "#0072B2", "#D55E00", "#CC79A7", "#000000")
HATCHES = ("", "//", "..", "xx", "\\\\", "++", "--", "oo")


def plot(summary: list[dict], path: Path, meta: dict | None = None) -> str:
    """Two panels per run: the partial-drop rate (with the NDR as a tick) and the highest
    rate forwarded with the generator flat out, side by side, so a router that collapses
    under overload, or one that leads flat out, shows. Bars are medians over the
    repetitions, whiskers their min-max; host and date in the title."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "no PNG: matplotlib is not installed (requirements/bench.txt)"
    meta = meta or {}
    cases = sorted({(s["family"], s["size"]) for s in summary})
    routers = [r for r in ROUTERS if any(s["router"] == r for s in summary)]
    by = {(s["router"], s["family"], s["size"]): s for s in summary}
    reps = max((s.get("reps", 1) for s in summary), default=1)
    fig, axes = plt.subplots(1, 2, figsize=(13, 5), sharey=True)
    width = 0.8 / max(1, len(routers))
    panels = (
        ("pdr_pps", f"PDR, loss <= {PDR_LOSS:.1%}"),
        ("max_fwd_pps", "max forwarded, generator flat out"),
    )
    for ax, (key, label) in zip(axes, panels, strict=True):
        for i, r in enumerate(routers):
            xs, ys, lo, hi, ndr = [], [], [], [], []
            for j, c in enumerate(cases):
                s = by.get((r, *c), {})
                v = s.get(key, 0) / 1e6
                xs.append(j + i * width)
                ys.append(v)
                lo.append(v - s.get(key + "_min", 0) / 1e6 if v else 0)
                hi.append(s.get(key + "_max", 0) / 1e6 - v if v else 0)
                ndr.append(s.get("ndr_pps", 0) / 1e6)
            colour, hatch = PALETTE[i % len(PALETTE)], HATCHES[i % len(HATCHES)]
            ax.bar(xs, ys, width, label=r, yerr=[lo, hi], capsize=3, color=colour, hatch=hatch,
                   edgecolor="black", linewidth=0.5)  # fmt: skip
            if key == "pdr_pps":
                ax.scatter(xs, ndr, marker="_", color="black", s=140, zorder=3,
                           label="NDR (no loss)" if i == 0 else None)  # fmt: skip
        ax.set_xticks([j + width * (len(routers) - 1) / 2 for j in range(len(cases))])
        ax.set_xticklabels([f"IPv{f} {s} B" for f, s in cases])
        ax.set_title(label)
        ax.grid(axis="y", alpha=0.3)
    axes[0].set_ylabel("Mpps")
    axes[0].legend(fontsize=8)
    host = meta.get("machine", "this host")
    fig.suptitle(
        f"Same table, same traffic (lab veths); {host}; {meta.get('date', '')}", fontsize=10
    )
    fig.text(0.5, 0.01, f"Bars: median of {reps} repetition(s); whiskers: min-max of the {reps}; "
             "black ticks: NDR (median).", ha="center", fontsize=9)  # fmt: skip
    fig.tight_layout(rect=(0, 0.04, 1, 0.95))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return str(path)
