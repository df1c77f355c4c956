"""The side-by-side forwarding benchmark: in one run, the same traffic through the
same table in the lab's dut, forwarded by the Linux kernel, by the kernel's XDP fast path
(benches/xdp_fwd), by a minimal AF_XDP forwarder in C (benches/afxdp_ref, the ceiling of the
method), by DPDK's l3fwd on the net_af_xdp driver (benches/dpdk) and by Corridor with one
worker, then two. Per router, frame size and family: the
no-drop rate (NDR, RFC 2544 section 26.1) and the partial-drop rate (PDR, loss <= 0.5 %),
each by binary search over the offered rate, the rate counted at the sink with the
generator flat out, latency p50/p99 at half the NDR, and the router CPU's busy share.

    .venv/bin/python -m benches.forwarding [--quick] [--routers kernel,xdp_fwd,...]
        [--sizes 64,512,1518] [--families 4,6] [--reps N] [--trial S] [--profile]
        [--hosts gen=HOST,sink=HOST [--remote 'ssh root@{host}']]

As root. Traffic exists only in the namespaces `cor-b<pid>-gen|dut|sink` (removed at the
end, also on failure; CORRIDOR_BENCH_NS=cor-x for another prefix than cor-b), only
toward 198.18.0.0/15 and 2001:db8::/32, every trial bounded in
time. With --hosts the generator and the sink are other machines (the test VMs, see
vagrant/) and this one is the router. Output: benches/results/forwarding-latest.{md,json,png}.

CPU placement (2 cores here): the generator (BPF_PROG_RUN in its own thread), the sink's
NAPI thread and this harness share CPU 0; everything of the router (the threaded NAPI of
its input port and its user-space workers) runs on CPU 1. The sink's NAPI thread is
SCHED_FIFO: it is measuring apparatus, and under CFS the busy generator made its ring
overflow. The router's NAPI thread stays SCHED_OTHER like ksoftirqd: a real-time NAPI
thread starves an AF_XDP router's own worker on the same CPU under overload (Corridor and
the C forwarder fell to 0.03-0.2 Mpps), which no deployment would do;
CORRIDOR_BENCH_RT=1 makes it real-time for comparison. The "-rt" routers, whose worker is
SCHED_FIFO 10, have it at SCHED_FIFO 5: it runs whenever the worker sleeps and can never
starve it. With two Corridor workers the second
shares CPU 0 with the generator, and the generator, on one CPU, fills only queue 0 of a
veth: that row measures the cost of a second worker here, not scaling.

Its parts: routers (the kernel, the XDP fast path, the C AF_XDP forwarder and Corridor, as
the lab's dut), search (trials and the NDR/PDR search), profile (perf on the router CPU),
report (the tables and the plot) and cli (the options and the run).
"""
