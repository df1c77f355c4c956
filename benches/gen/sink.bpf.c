// SPDX-License-Identifier: GPL-2.0
/* The sink's XDP program: counts and drops the generator's frames, and files the one-way
 * latency (now - the send time in the signature; both CLOCK_MONOTONIC of one kernel) in a
 * log-linear histogram. ARP and ICMPv6 go to the kernel so the sink answers neighbour
 * resolution; anything else is counted as "other" and dropped. */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/in.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "bench.h"

struct { __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY); __uint(max_entries, SINK_NCOUNTERS);
	 __type(key, __u32); __type(value, __u64); } counters SEC(".maps");
struct { __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY); __uint(max_entries, HIST_BUCKETS);
	 __type(key, __u32); __type(value, __u64); } hist SEC(".maps");

static __always_inline void count(__u32 k, __u64 v)
{
	__u64 *c = bpf_map_lookup_elem(&counters, &k);
	if (c)
		*c += v;
}

static __always_inline __u32 log2_u64(__u64 v)
{
	__u32 r = 0;
	if (v >> 32) { v >>= 32; r += 32; }
	if (v >> 16) { v >>= 16; r += 16; }
	if (v >> 8) { v >>= 8; r += 8; }
	if (v >> 4) { v >>= 4; r += 4; }
	if (v >> 2) { v >>= 2; r += 2; }
	if (v >> 1) { r += 1; }
	return r;
}

SEC("xdp")
int sink(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data, *end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	if ((void *)(eth + 1) > end)
		return XDP_DROP;
	__u32 l4;
	if (eth->h_proto == bpf_htons(ETH_P_IP)) {
		l4 = 14 + 20;
	} else if (eth->h_proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6 = (void *)(eth + 1);
		if ((void *)(ip6 + 1) > end)
			return XDP_DROP;
		if (ip6->nexthdr == IPPROTO_ICMPV6)
			return XDP_PASS;
		l4 = 14 + 40;
	} else if (eth->h_proto == bpf_htons(ETH_P_ARP)) {
		return XDP_PASS;
	} else {
		count(SINK_OTHER, 1);
		return XDP_DROP;
	}
	__u32 *sig = data + l4 + 8;
	if ((void *)sig + BENCH_SIG_LEN > end || sig[0] != bpf_htonl(BENCH_MAGIC)) {
		count(SINK_OTHER, 1);
		return XDP_DROP;
	}
	count(SINK_PKTS, 1);
	count(SINK_BYTES, end - data);
	__u64 sent;
	__builtin_memcpy(&sent, &sig[1], 8);
	__u64 now = bpf_ktime_get_ns();
	if (sent > now || now - sent >= (1ULL << 41)) {
		count(SINK_LATE, 1);
		return XDP_DROP;
	}
	__u64 d = now - sent;
	__u32 b;
	if (d < 1024) {
		b = d >> 6;
	} else {
		__u32 m = log2_u64(d);
		b = HIST_LINEAR + (m - 10) * HIST_SUB + ((d >> (m - 4)) & (HIST_SUB - 1));
	}
	__u64 *h = bpf_map_lookup_elem(&hist, &b);
	if (h)
		*h += 1;
	return XDP_DROP;
}

char LICENSE[] SEC("license") = "GPL";
