"""The report: the churn and the failover tables in Markdown."""

from __future__ import annotations

import statistics

from benches.change.search import SIZE


def fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def markdown(meta: dict, churn: dict | None, failover: list[dict] | None) -> str:
    lines = [
        f"Behaviour under change, {meta['date']}, mode {meta['mode']}: IPv4, {SIZE} B frames, "
        "through `corridor agent` (1 worker) over gRPC.",
        f"Machine: {meta['machine']}.",
        f"Placement: {meta['placement']}",
        "",
    ]
    if churn is not None:
        w, calm, ch = churn["writer"], churn["undisturbed"], churn["churn"]
        mpps = lambda pps: f"{pps / 1e6:.3f}"  # noqa: E731
        delivered = lambda t: (t["at_a"] + t["at_b"]) / max(1, t["sent"])  # noqa: E731
        where = lambda t: (f"refused by dut0 {t['lost_in']}, by the worker's rx ring "  # noqa: E731
                           f"{t['lost_ring']}, dropped toward A "
                           f"{t['lost_out_a']}, steal {t['steal']} jiffies")  # fmt: skip
        ratio = churn["ratio"]
        lines += [
            f"Churn: {churn['stable_routes']} stable prefixes (/16-/24) toward sink A; "
            f"{churn['churned_prefixes']} prefixes /25-/32 inside the stable /24s cycling via B "
            f"-> via A -> deleted; {churn['destinations']} destinations covered by no churned "
            f"prefix; base rate ({churn.get('criterion', 'zero loss')}) "
            f"{mpps(churn['zero_loss_pps'])} Mpps asked of the generator "
            f"({mpps(churn['zero_loss_measured_pps'])} as it measured itself; trials of "
            f"{meta['trial_s']} s), both trials at 90 % of the rate asked for {meta['seconds']} s."
            " Offered and forwarded rates are per the generator's active time (gaps left out).",
            "",
            "| measure | value | target |",
            "|---|---|---|",
            f"| forwarded, undisturbed (Mpps) | {mpps(calm['fwd_pps'])} (offered "
            f"{mpps(calm['sent_pps'])}, lost {calm['lost']}, at sink B {calm['at_b']}) | |",
            f"| forwarded, under churn (Mpps) | {mpps(ch['fwd_pps'])} (offered "
            f"{mpps(ch['sent_pps'])}) | |",
            f"| ratio churn / undisturbed | {fmt(ratio, '.3f')} | >= 0.9 "
            f"({'met' if ratio is not None and ratio >= 0.9 else 'missed'}) |",
            f"| frames lost, undisturbed / under churn | {calm['lost']} / {ch['lost']} of "
            f"{ch['sent']} ({where(calm)} / {where(ch)}) | |",
            f"| frames misforwarded (at sink B) | {ch['at_b']} | 0 "
            f"({'met' if ch['at_b'] == 0 else 'missed'}) |",
            f"| route updates/s achieved | {churn['updates_per_s']:,.0f} (asked "
            f"{churn['updates_asked_per_s']:,}: {w['batches_acked']} Write batches of "
            f"{w['batch']} acknowledged, ack p50 {w['ack_p50_ms']:.1f} / p99 "
            f"{w['ack_p99_ms']:.1f} / max {w['ack_max_ms']:.1f} ms; writer on CPU {w['cpu']}) "
            f"| {churn['updates_asked_per_s']:,} |",
            f"| delivered / offered, undisturbed / churn | {delivered(calm):.4f} / "
            f"{delivered(ch):.4f} | |",
            f"| router CPU busy, undisturbed / churn | {calm['router_cpu']:.0%} / "
            f"{ch['router_cpu']:.0%} | |",
            f"| generator lags forgiven, undisturbed / churn | "
            f"{calm['generator_forgiven']} / {ch['generator_forgiven']} | |",
            "",
        ]
    if failover:
        lines += [
            f"Failover: one group of two members (dut1 -> sink A, dut2 -> sink B), "
            f"{meta['failover_s']} s trials, sinkb0 taken down halfway, {meta['failover_reps']} "
            "failure(s) per size (median, range). Window = (lost - lost at the input, which "
            "trials without failure lose too) / (offered pps x B's share before) x 1000. "
            "Re-pointed: GetCounters (polled every 5 ms) shows the link down, counted from the "
            "return of `ip link set down`.",
            "",
            "| routes | offered Mpps | B's share | lost, no failure | lost, failure | "
            "of them dropped by dut2 | loss window (ms) | agent re-pointed after (ms) | target |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for r in failover:
            fs = r["failures"]
            ok = r["window_ms"] is not None and r["window_ms"] < 50
            span = r["window_ms_range"]
            window = fmt(r["window_ms"], ".1f")
            if span and len(fs) > 1:
                window += f" ({span[0]:.1f}-{span[1]:.1f})"
            lines.append(
                f"| {r['routes']:,} | {statistics.median(f['sent_pps'] for f in fs) / 1e6:.3f} | "
                f"{statistics.median(f['share_b'] for f in fs):.1%} | {r['baseline']['lost']} | "
                f"{', '.join(str(f['lost']) for f in fs)} | "
                f"{', '.join(str(f['lost_out_b']) for f in fs)} | {window} | "
                f"{fmt(r['agent_repointed_ms'], '.1f')} | < 50 ms ({'met' if ok else 'missed'}) |"
            )
        ends = [r for r in failover if r["window_ms"] is not None]
        if len(ends) > 1:
            lines += ["", f"Window at {ends[-1]['routes']:,} routes minus at "
                      f"{ends[0]['routes']:,}: {ends[-1]['window_ms'] - ends[0]['window_ms']:+.1f}"
                      " ms (target: the same)."]  # fmt: skip
        lines.append("")
    return "\n".join(lines)
