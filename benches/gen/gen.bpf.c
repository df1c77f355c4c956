// SPDX-License-Identifier: GPL-2.0
/* The generator's XDP program, run by BPF_PROG_RUN in live-frames mode: each run builds one
 * frame from the template (the kernel recycles frame buffers, and a router on the path may
 * have rewritten them, so every header byte is written every time), picks the next flow
 * (destination from `dsts`, UDP source port), stamps the send time, and returns XDP_TX
 * out of the generator's veth. Checksums are complete: IPv4 header and UDP (IPv4 and IPv6). */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/udp.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "bench.h"

#define HDR4 (14 + 20 + 8)
#define HDR6 (14 + 40 + 8)
#define CATCH_UP 8
#define GAP_NS 20000 /* runs are ~0.1-1 us apart while a call runs */

struct tmpl { __u8 b[HDR6]; };

struct { __uint(type, BPF_MAP_TYPE_ARRAY); __uint(max_entries, 1);
	 __type(key, __u32); __type(value, struct gen_config); } config SEC(".maps");
struct { __uint(type, BPF_MAP_TYPE_ARRAY); __uint(max_entries, 1);
	 __type(key, __u32); __type(value, struct tmpl); } template SEC(".maps");
struct { __uint(type, BPF_MAP_TYPE_ARRAY); __uint(max_entries, MAX_DSTS);
	 __type(key, __u32); __type(value, struct in6_addr); } dsts SEC(".maps");
struct { __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY); __uint(max_entries, 1);
	 __type(key, __u32); __type(value, struct gen_state); } state SEC(".maps");

static __always_inline __u32 fold(__u64 sum)
{
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return (__u32)sum;
}

/* Sum of 16-bit words, network order kept (the one's-complement sum is byte-order neutral). */
#define SUM16(p, n) ({ __u64 _s = 0; const __u16 *_w = (const __u16 *)(p); \
	_Pragma("unroll") for (int _i = 0; _i < (n) / 2; _i++) _s += _w[_i]; _s; })

SEC("xdp")
int gen(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data, *end = (void *)(long)ctx->data_end;
	__u32 zero = 0;
	struct gen_config *cfg = bpf_map_lookup_elem(&config, &zero);
	struct tmpl *t = bpf_map_lookup_elem(&template, &zero);
	struct gen_state *st = bpf_map_lookup_elem(&state, &zero);
	if (!cfg || !t || !st || !cfg->ndst || !cfg->nflows)
		return XDP_ABORTED;
	__u64 now = bpf_ktime_get_ns();
	if (!st->first_ns) {
		st->first_ns = now;
		st->next_due = now << 8;
	} else if (now - st->last_ns > GAP_NS) {
		/* A gap is left out of the offered window, so the schedule stops for it too: it
		 * is shifted by the gap, and the frame due next is sent as long after the gap as
		 * it was due after the last run before it. Restarting the schedule at the gap's
		 * end instead sent that frame early after every gap, and a preempted generator
		 * read up to half again its rate while active. */
		st->gap_ns += now - st->last_ns;
		st->next_due += (now - st->last_ns) << 8;
	}
	st->last_ns = now;
	/* Pacing in the kernel: BPF_PROG_RUN costs milliseconds per call (page pool set-up),
	 * so one call runs millions of times and only the runs whose frame is due transmit;
	 * the others drop at once. A lag of more than CATCH_UP frames (the gap between two calls,
	 * say) is forgiven, not caught up: catching up would send a burst at the generator's own
	 * speed, which overflows the 256-frame ring of the router's veth and counts as the
	 * router's loss. The rate reported is what was sent, so forgiving is honest. */
	if (cfg->interval) {
		__u64 now_fp = now << 8;
		if (now_fp < st->next_due) {
			st->idle++;
			return XDP_DROP;
		}
		if (st->next_due + CATCH_UP * cfg->interval < now_fp) {
			st->next_due = now_fp;
			st->forgiven++;
		}
		st->next_due += cfg->interval;
	}
	__u32 flow = (__u32)(st->seq % cfg->nflows);
	st->seq++;
	__u32 di = flow % cfg->ndst;
	__u16 sport = bpf_htons(1024 + (flow / cfg->ndst) % 60000);
	struct in6_addr *dst = bpf_map_lookup_elem(&dsts, &di);
	if (!dst)
		return XDP_ABORTED;

	if (cfg->family == 4) {
		if (data + HDR4 + BENCH_SIG_LEN > end)
			return XDP_ABORTED;
		__builtin_memcpy(data, t->b, HDR4);
		struct iphdr *ip = data + 14;
		struct udphdr *udp = data + 14 + 20;
		__u32 *sig = data + HDR4;
		ip->daddr = dst->s6_addr32[0];
		ip->check = 0;
		ip->check = ~fold(SUM16(ip, 20)) & 0xffff;
		udp->source = sport;
		sig[0] = bpf_htonl(BENCH_MAGIC);
		__builtin_memcpy(&sig[1], &now, 8);
		/* The rest of the payload is the template's zeros, untouched since the first copy
		 * (routers rewrite headers only), so the sum below covers the whole datagram. */
		udp->check = 0;
		__u64 s = SUM16(&ip->saddr, 8) + bpf_htons(IPPROTO_UDP) + udp->len;
		s += SUM16(udp, 8) + SUM16(sig, BENCH_SIG_LEN);
		__u16 c = ~fold(s) & 0xffff;
		udp->check = c ? c : 0xffff;
	} else {
		if (data + HDR6 + BENCH_SIG_LEN > end)
			return XDP_ABORTED;
		__builtin_memcpy(data, t->b, HDR6);
		struct ipv6hdr *ip6 = data + 14;
		struct udphdr *udp = data + 14 + 40;
		__u32 *sig = data + HDR6;
		__builtin_memcpy(&ip6->daddr, dst, 16);
		udp->source = sport;
		sig[0] = bpf_htonl(BENCH_MAGIC);
		__builtin_memcpy(&sig[1], &now, 8);
		udp->check = 0;
		__u64 s = SUM16(&ip6->saddr, 32) + bpf_htons(IPPROTO_UDP) + udp->len;
		s += SUM16(udp, 8) + SUM16(sig, BENCH_SIG_LEN);
		__u16 c = ~fold(s) & 0xffff;
		udp->check = c ? c : 0xffff;
	}
	return XDP_TX;
}

char LICENSE[] SEC("license") = "GPL";
