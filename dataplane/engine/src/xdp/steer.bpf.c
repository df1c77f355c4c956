// SPDX-License-Identifier: (GPL-2.0 OR Apache-2.0)
/* Corridor's XDP steering program.
 *
 * It runs on every rx queue of every port and decides, per frame, who handles it:
 * the engine (XDP_REDIRECT to the queue's AF_XDP socket) takes only transit traffic —
 * IPv4/IPv6 unicast, untagged or with one 802.1Q tag, sent to this port's MAC and not to
 * one of the router's own addresses. Everything else goes to the kernel (XDP_PASS) so the
 * host keeps answering ARP, Neighbor Discovery, BGP, SSH and ping on the same port.
 *
 * Frames that parse far enough to read the destination address are steered even when
 * otherwise odd (bad checksum, TTL 1, options): the engine validates every frame, counts
 * each drop by reason and generates the ICMP errors. Frames too short to classify go to
 * the kernel, which counts them.
 *
 * Edge protection comes first, for every frame of a port that has it (to the kernel too:
 * ARP, ND and BGP obey the same rules): per sub-interface (port, VLAN), an ethertype
 * filter (only IPv4, IPv6 and ARP, behind at most one 802.1Q tag) and a source MAC filter
 * (only the registered stations). What fails is dropped here and counted per port; the
 * refused source MACs are kept in a small LRU table the agent reads.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

/* Indices of the `counters` array; mirrored by `xdp::Counter` in mod.rs. */
enum counter {
	COUNTER_STEERED = 0,   /* redirected to an AF_XDP socket */
	COUNTER_PASSED = 1,    /* classified as the kernel's */
	COUNTER_NO_SOCKET = 2, /* transit, but no socket bound on this queue: passed */
	COUNTER_MAX = 3,
};

/* The XSKMAP is shared by every port the program is attached to: a port's sockets live at
 * slot * MAX_QUEUES + rx queue, the slot coming from the `ports` map. Mirrored in mod.rs. */
#define MAX_QUEUES 256
#define MAX_PORTS 64
#define ETH_P_8021Q_BE bpf_htons(0x8100)
#define ETH_P_IP_BE bpf_htons(0x0800)
#define ETH_P_IPV6_BE bpf_htons(0x86DD)
#define ETH_P_ARP_BE bpf_htons(0x0806)
#define IPPROTO_ICMPV6_NUM 58

struct {
	__uint(type, BPF_MAP_TYPE_XSKMAP);
	__uint(max_entries, MAX_PORTS * MAX_QUEUES);
	__type(key, __u32);
	__type(value, __u32);
} xsks SEC(".maps");

/* A frame's two map lookups (its port, and whether it is addressed to the router) were
 * hash-table lookups, a third of this program's time. Each now goes first through an
 * array, which the verifier inlines to a bounds check and an add:
 *  - `port_cache`: direct-mapped by ifindex (low bits); an entry serves the port whose
 *    ifindex it names, any other port falls through to the `ports` hash;
 *  - `router_filter`: one bit per hash of an address, set for every router address; a
 *    clear bit proves the destination is not the router's, so only the few frames whose
 *    bit is set pay the exact lookup in `router_v4` / `router_v6`.
 * User space (mod.rs) keeps both in step with the hashes, which stay the truth. */
#define PORT_CACHE 1024
#define FILTER_LOG2 13
#define FILTER_WORDS ((1 << FILTER_LOG2) / 64)

struct port_cached {
	__u32 ifindex; /* 0: empty */
	__u8 mac[6];
	__u8 edge; /* 1: some sub-interface of the port has an edge policy */
	__u8 pad;
	__u32 slot;
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, PORT_CACHE);
	__type(key, __u32);
	__type(value, struct port_cached);
} port_cache SEC(".maps");

struct filter {
	__u64 words[FILTER_WORDS];
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct filter);
} router_filter SEC(".maps");

/* Fibonacci hashing of a 32-bit word to FILTER_LOG2 bits; mirrored by `filter_bit` in
 * mod.rs. IPv4 hashes its address as loaded from the header, IPv6 the XOR of its four
 * words. */
static __always_inline __u32 filter_bit(__u32 x)
{
	return (x * 0x9E3779B1u) >> (32 - FILTER_LOG2);
}

static __always_inline int maybe_router(__u32 x)
{
	__u32 zero = 0;
	struct filter *f = bpf_map_lookup_elem(&router_filter, &zero);
	__u32 bit = filter_bit(x);

	if (!f)
		return 1; /* cannot happen for an array; the exact lookup decides */
	return (f->words[(bit / 64) & (FILTER_WORDS - 1)] >> (bit % 64)) & 1;
}

/* The router's own IPv4 addresses (network byte order as stored in the header). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, __u32);
	__type(value, __u8);
} router_v4 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, __u8[16]);
	__type(value, __u8);
} router_v6 SEC(".maps");

/* ifindex → the port's MAC and XSKMAP slot. A port without an entry steers nothing. */
struct port {
	__u8 mac[6];
	__u8 edge; /* as in port_cached */
	__u8 pad;
	__u32 slot;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_PORTS);
	__type(key, __u32);
	__type(value, struct port);
} ports SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, COUNTER_MAX);
	__type(key, __u32);
	__type(value, __u64);
} counters SEC(".maps");

/* Edge protection, mirrored in mod.rs (`edge_key`, `edge_value`, `mac_key`). */
#define EDGE_ETHERTYPES 1 /* only IPv4, IPv6, ARP */
#define EDGE_MACS 2       /* only the allowed source MACs */
#define EDGE_POLICIES 16384
#define EDGE_MACS_MAX 65536
#define REFUSED_MACS 256

struct edge_key {
	__u32 ifindex;
	__u16 vlan; /* 0: untagged (or priority-tagged) */
	__u16 pad;
};

struct edge_value {
	__u32 flags;
	__u32 slot; /* the port's: where its drops are counted */
};

struct mac_key {
	__u32 ifindex;
	__u16 vlan;
	__u8 mac[6];
};

struct refused {
	__u64 packets;
	__u64 last_ns; /* bpf_ktime_get_ns: CLOCK_MONOTONIC */
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, EDGE_POLICIES);
	__type(key, struct edge_key);
	__type(value, struct edge_value);
} edge_policies SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, EDGE_MACS_MAX);
	__type(key, struct mac_key);
	__type(value, __u8);
} allowed_macs SEC(".maps");

/* Bounded: the least recently refused go first. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, REFUSED_MACS);
	__type(key, struct mac_key);
	__type(value, struct refused);
} refused_macs SEC(".maps");

/* Drops per port slot: [slot * EDGE_DROP_MAX + reason]. */
enum edge_drop {
	EDGE_DROP_ETHERTYPE = 0,
	EDGE_DROP_MAC = 1,
	EDGE_DROP_MAX = 2,
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, MAX_PORTS * EDGE_DROP_MAX);
	__type(key, __u32);
	__type(value, __u64);
} edge_drops SEC(".maps");

static __always_inline void count(__u32 which)
{
	__u64 *value = bpf_map_lookup_elem(&counters, &which);
	if (value)
		*value += 1; /* per-CPU slot: no other writer */
}

static __always_inline int pass(void)
{
	count(COUNTER_PASSED);
	return XDP_PASS;
}

static __always_inline int edge_drop(__u32 slot, __u32 reason)
{
	__u32 key = slot * EDGE_DROP_MAX + reason;
	__u64 *value = bpf_map_lookup_elem(&edge_drops, &key);

	if (value)
		*value += 1; /* per-CPU slot: no other writer */
	return XDP_DROP;
}

/* clang lowers __builtin_memcmp to a libc call on BPF: compare the six bytes by hand. */
static __always_inline int same_mac(const __u8 *a, const __u8 *b)
{
	return ((a[0] ^ b[0]) | (a[1] ^ b[1]) | (a[2] ^ b[2]) | (a[3] ^ b[3]) | (a[4] ^ b[4]) |
		(a[5] ^ b[5])) == 0;
}

/* Ethernet header without the kernel's struct, to keep the includes minimal. */
struct eth {
	__u8 dst[6];
	__u8 src[6];
	__be16 type;
};

struct vlan {
	__be16 tci;
	__be16 type;
};

/* The edge policy of the frame's sub-interface: XDP_DROP (counted) or XDP_PASS (go on). */
static __always_inline int edge_check(const struct eth *eth, const void *data_end, __u32 ifindex,
				      __u32 slot)
{
	struct edge_key key = { .ifindex = ifindex, .vlan = 0, .pad = 0 };
	struct edge_value *policy;
	__be16 type = eth->type;

	if (type == ETH_P_8021Q_BE) {
		const struct vlan *vlan = (const void *)(eth + 1);
		if ((const void *)(vlan + 1) > data_end)
			return XDP_PASS; /* too short for anyone: the kernel drops it */
		key.vlan = bpf_ntohs(vlan->tci) & 0x0fff;
		type = vlan->type;
	}
	policy = bpf_map_lookup_elem(&edge_policies, &key);
	if (!policy)
		return XDP_PASS;
	if ((policy->flags & EDGE_ETHERTYPES) && type != ETH_P_IP_BE && type != ETH_P_IPV6_BE &&
	    type != ETH_P_ARP_BE)
		return edge_drop(slot, EDGE_DROP_ETHERTYPE);
	if (policy->flags & EDGE_MACS) {
		struct mac_key mk = { .ifindex = ifindex, .vlan = key.vlan };
		struct refused *r;

		__builtin_memcpy(mk.mac, eth->src, sizeof(mk.mac));
		if (bpf_map_lookup_elem(&allowed_macs, &mk))
			return XDP_PASS;
		r = bpf_map_lookup_elem(&refused_macs, &mk);
		if (r) {
			__sync_fetch_and_add(&r->packets, 1);
			r->last_ns = bpf_ktime_get_ns();
		} else {
			struct refused fresh = { .packets = 1, .last_ns = bpf_ktime_get_ns() };
			bpf_map_update_elem(&refused_macs, &mk, &fresh, BPF_ANY);
		}
		return edge_drop(slot, EDGE_DROP_MAC);
	}
	return XDP_PASS;
}

/* RFC 791 fixed header, only the fields read here. */
struct ipv4 {
	__u8 ver_ihl;
	__u8 tos;
	__be16 total_len;
	__be16 id;
	__be16 frag;
	__u8 ttl;
	__u8 proto;
	__be16 csum;
	__be32 saddr;
	__be32 daddr;
};

/* RFC 8200 section 3. */
struct ipv6 {
	__be32 ver_tc_flow;
	__be16 payload_len;
	__u8 next_header;
	__u8 hop_limit;
	__u8 saddr[16];
	__u8 daddr[16];
};

static __always_inline int is_ipv4_for_kernel(const struct ipv4 *ip)
{
	__u32 daddr = ip->daddr;
	__u32 host = bpf_ntohl(daddr);
	__u8 *mine;

	if ((host & 0xf0000000) == 0xe0000000) /* 224.0.0.0/4 multicast (RFC 5771) */
		return 1;
	if (host == 0xffffffff)                /* limited broadcast (RFC 919) */
		return 1;
	if ((host & 0xffff0000) == 0xa9fe0000) /* 169.254.0.0/16 link-local (RFC 3927) */
		return 1;
	if (!maybe_router(daddr))
		return 0;
	mine = bpf_map_lookup_elem(&router_v4, &daddr);
	return mine != 0;
}

static __always_inline int is_ipv6_for_kernel(const struct ipv6 *ip, const void *data_end)
{
	__u8 daddr[16];
	__u8 *mine;

	if (ip->daddr[0] == 0xff)                                 /* ff00::/8 multicast */
		return 1;
	if (ip->daddr[0] == 0xfe && (ip->daddr[1] & 0xc0) == 0x80) /* fe80::/10 link-local */
		return 1;
	/* Neighbor Discovery (RFC 4861: RS, RA, NS, NA, Redirect) is never forwarded, whatever
	 * its destination: the kernel must see it even if an address is missing from router_v6. */
	if (ip->next_header == IPPROTO_ICMPV6_NUM) {
		const __u8 *icmp_type = (const __u8 *)(ip + 1);
		if ((const void *)(icmp_type + 1) > data_end)
			return 1;
		if (*icmp_type >= 133 && *icmp_type <= 137)
			return 1;
	}
	__builtin_memcpy(daddr, ip->daddr, sizeof(daddr));
	{
		__u32 w[4];
		__builtin_memcpy(w, daddr, sizeof(w));
		if (!maybe_router(w[0] ^ w[1] ^ w[2] ^ w[3]))
			return 0;
	}
	mine = bpf_map_lookup_elem(&router_v6, daddr);
	return mine != 0;
}

SEC("xdp")
int corridor_steer(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct eth *eth = data;
	struct port_cached *cached;
	struct port *port;
	const __u8 *port_mac;
	__u32 port_slot;
	__u8 port_edge;
	__u32 queue = ctx->rx_queue_index;
	__u32 ifindex = ctx->ingress_ifindex;
	__u32 cache_key = ifindex & (PORT_CACHE - 1);
	__be16 type;
	void *l3;
	int action;

	if ((void *)(eth + 1) > data_end)
		return pass();
	cached = bpf_map_lookup_elem(&port_cache, &cache_key);
	if (cached && cached->ifindex == ifindex && ifindex != 0) {
		port_mac = cached->mac;
		port_slot = cached->slot;
		port_edge = cached->edge;
	} else {
		port = bpf_map_lookup_elem(&ports, &ifindex);
		if (!port)
			return pass();
		port_mac = port->mac;
		port_slot = port->slot;
		port_edge = port->edge;
	}
	/* Every frame of the port, the kernel's included. */
	if (port_edge && edge_check(eth, data_end, ifindex, port_slot) == XDP_DROP)
		return XDP_DROP;
	/* Broadcast and multicast at L2 (I/G bit) belong to the kernel. */
	if (eth->dst[0] & 1)
		return pass();
	/* Unicast to another station (a promiscuous port, a bridge flood): the kernel drops it. */
	if (!same_mac(eth->dst, port_mac))
		return pass();
	if (port_slot >= MAX_PORTS || queue >= MAX_QUEUES)
		return pass();

	type = eth->type;
	l3 = eth + 1;
	if (type == ETH_P_8021Q_BE) {
		struct vlan *vlan = l3;
		if ((void *)(vlan + 1) > data_end)
			return pass();
		type = vlan->type;
		l3 = vlan + 1;
	}

	if (type == ETH_P_IP_BE) {
		struct ipv4 *ip = l3;
		if ((void *)(ip + 1) > data_end)
			return pass();
		if (is_ipv4_for_kernel(ip))
			return pass();
	} else if (type == ETH_P_IPV6_BE) {
		struct ipv6 *ip = l3;
		if ((void *)(ip + 1) > data_end)
			return pass();
		if (is_ipv6_for_kernel(ip, data_end))
			return pass();
	} else {
		/* ARP, a second tag (QinQ), LLDP, anything else. */
		return pass();
	}

	/* The low bits of the flags are the action when the queue has no socket (kernel >= 5.3). */
	action = bpf_redirect_map(&xsks, port_slot * MAX_QUEUES + queue, XDP_PASS);
	count(action == XDP_REDIRECT ? COUNTER_STEERED : COUNTER_NO_SOCKET);
	return action;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
