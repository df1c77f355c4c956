"""Behaviour under change: what forwarding does while the control plane rewrites it, through
the real agent (`corridor agent` as a process, written over gRPC on its Unix socket), in the
bench lab plus a second sink (`cor-c<pid>-sinkb`, veth dut2 <-> sinkb0).

  churn     A stable table (a few hundred prefixes /16-/24 in 198.19.0.0/16, toward sink A)
            and, inside the same /24s, more-specific prefixes (/25-/32) cycling through
            "via sink B" -> "via sink A" -> deleted, written at --churn-rate updates/s
            (paced batches). The traffic goes only to stable destinations that no churned
            prefix covers, so the churn rewrites the very trie nodes those lookups walk
            through, yet every frame at sink B is misforwarded. Forwarding at 90 % of the
            zero-loss rate for --seconds, undisturbed and then under churn.
  failover  One group of two members, toward sink A (dut1) and sink B (dut2), N routes on it
            (1 k, then about 1 M: the Routeviews table plus the test routes). Traffic of many
            flows at a modest rate; halfway, sinkb0 goes down, the agent's link watch
            re-points the group, and the frames lost give the loss window: lost / (offered
            pps x B's share) in ms. The loss any trial has (at the input, on this shared VM)
            is counted in the same trial and left out: a separate trial without a failure
            loses thousands or nothing at random. Re-pointing a group is one store whatever
            the number of routes, so the window should be the same at both sizes.

Every trial says where its frames were lost, from the kernel's counters (dut0 refusing the
generator's frames, dut1 / dut2 failing to transmit) and the agent's (the worker's AF_XDP
rx ring full), so a loss is not charged to the change when the input lost it.

    .venv/bin/python -m benches.change [--quick] [--scenarios churn,failover]

As root. Traffic exists only in namespaces `cor-c<pid>-*` (removed at the end, also on
failure or Ctrl-C), only toward 198.19.0.0/16 inside the test space 198.18.0.0/15, every
trial bounded in time and every writer in batches. Output: a Markdown table, and
benches/results/change-latest.{md,json} (--out). IPv4 only: the churn and the failover do
not depend on the family, and the generator sends one family per trial.

Placement (2 cores): as benches.forwarding places corridor-1, the engine's threads and dut0's
NAPI thread (SCHED_OTHER, as benches.forwarding explains) on CPU 1, the generator and both
sinks' NAPI threads (SCHED_FIFO: apparatus) on CPU 0. The agent's own threads (event loop,
executor: where written batches are decoded and applied) and the churn writer run on
--control-cpu, CPU 0 by default: a router keeps its control plane off its forwarding cores,
and CPU 1 has no room to spare at 90 % of its zero-loss rate.

Its parts: sinkb (the second sink), agent (the agent as a process and the next hops),
search (trials at both sinks and the base rate), churn, failover, report and cli.
"""
