/* The ceiling of the AF_XDP method: the least a forwarder can do. Frames arriving on queue 0
 * of --in are received on an AF_XDP socket, given new MACs (--src-mac of the egress port,
 * --dst-mac of the next hop) and sent on queue 0 of --out from the same UMEM (no copy
 * between the two sockets; the kernel copies in and out in copy mode, as on veth). No
 * lookup, no TTL: whatever Corridor does beyond this is the price of routing.
 *
 *   afxdp_ref --in dut0 --out dut1 --src-mac M --dst-mac M [--mode copy|zc|auto]
 *             [--duration S]
 *
 * libxdp loads its redirect program on --in; --out gets none (it only transmits). Runs for
 * at most --duration seconds (default 600) or until SIGINT/SIGTERM, then prints one JSON
 * line of counters. When the rx ring is empty it sleeps in poll() for up to 1 ms, so that
 * on a shared CPU the kernel thread feeding it (veth NAPI) can run. */
#include <errno.h>
#include <getopt.h>
#include <linux/if_link.h>
#include <linux/if_xdp.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <xdp/xsk.h>
#include "../gen/cli.h"

#define NUM_FRAMES 4096
#define FRAME_SIZE XSK_UMEM__DEFAULT_FRAME_SIZE
#define RING 2048
#define BATCH 64

static volatile sig_atomic_t stop;
static void on_signal(int sig) { (void)sig; stop = 1; }

static __u64 free_frames[NUM_FRAMES];
static unsigned nfree;

static void fail(const char *what, int err)
{
	fprintf(stderr, "afxdp_ref: %s: %s\n", what, strerror(err < 0 ? -err : err));
	exit(2);
}

int main(int argc, char **argv)
{
	const char *in = NULL, *out = NULL, *mode = "copy";
	unsigned char src_mac[6], dst_mac[6];
	int have_src = 0, have_dst = 0;
	double duration = 600;
	static const struct option opts[] = {
		{"in", 1, 0, 'i'}, {"out", 1, 0, 'o'}, {"src-mac", 1, 0, 's'},
		{"dst-mac", 1, 0, 'd'}, {"mode", 1, 0, 'm'}, {"duration", 1, 0, 't'}, {0},
	};
	for (int c; (c = getopt_long(argc, argv, "", opts, NULL)) != -1;) {
		switch (c) {
		case 'i': in = optarg; break;
		case 'o': out = optarg; break;
		case 's': have_src = !parse_mac(optarg, src_mac); break;
		case 'd': have_dst = !parse_mac(optarg, dst_mac); break;
		case 'm': mode = optarg; break;
		case 't': if (parse_double(optarg, &duration)) duration = -1; break;
		default: fprintf(stderr, "usage: see the head of afxdp_ref.c\n"); return 2;
		}
	}
	if (!in || !out || !have_src || !have_dst || !(duration > 0 && duration <= 3600)) {
		fprintf(stderr, "afxdp_ref: --in, --out, --src-mac, --dst-mac (xx:xx:xx:xx:xx:xx) "
				"are required; --duration in (0, 3600]\n");
		return 2;
	}
	if (strcmp(mode, "copy") && strcmp(mode, "zc") && strcmp(mode, "auto")) {
		fprintf(stderr, "afxdp_ref: --mode %s: expected copy, zc or auto\n", mode);
		return 2;
	}
	__u16 bind = !strcmp(mode, "copy") ? XDP_COPY : !strcmp(mode, "zc") ? XDP_ZEROCOPY : 0;

	void *area = mmap(NULL, (size_t)NUM_FRAMES * FRAME_SIZE, PROT_READ | PROT_WRITE,
			  MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (area == MAP_FAILED)
		fail("mmap", errno);
	/* Zeroed: libxdp sets up a shared-UMEM socket's own fill/completion rings without
	 * writing their cached indices, and stack garbage there read as phantom completions
	 * (a crash on the first forwarded frame, depending on what the stack held). */
	struct xsk_ring_prod fill = {0}, out_fill = {0}, tx = {0};
	struct xsk_ring_cons comp = {0}, out_comp = {0}, rx = {0};
	struct xsk_umem_config ucfg = {.fill_size = RING, .comp_size = RING,
				       .frame_size = FRAME_SIZE, .frame_headroom = 0};
	struct xsk_umem *umem;
	int err = xsk_umem__create(&umem, area, (__u64)NUM_FRAMES * FRAME_SIZE, &fill, &comp,
				   &ucfg);
	if (err)
		fail("xsk_umem__create", err);
	struct xsk_socket_config rcfg = {.rx_size = RING, .tx_size = RING,
					 .xdp_flags = XDP_FLAGS_DRV_MODE,
					 .bind_flags = bind | XDP_USE_NEED_WAKEUP};
	struct xsk_socket *xin, *xout;
	err = xsk_socket__create_shared(&xin, in, 0, umem, &rx, NULL, &fill, &comp, &rcfg);
	if (err)
		fail("socket on --in", err);
	struct xsk_socket_config tcfg = rcfg;
	tcfg.libxdp_flags = XSK_LIBXDP_FLAGS__INHIBIT_PROG_LOAD;
	err = xsk_socket__create_shared(&xout, out, 0, umem, NULL, &tx, &out_fill, &out_comp,
					&tcfg);
	if (err)
		fail("socket on --out", err);

	for (unsigned i = 0; i < NUM_FRAMES; i++)
		free_frames[nfree++] = (__u64)i * FRAME_SIZE;
	signal(SIGINT, on_signal);
	signal(SIGTERM, on_signal);
	struct timespec t0, t;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	unsigned long long rx_pkts = 0, tx_pkts = 0, tx_full = 0, kicks = 0, polls = 0;
	struct pollfd pfd = {.fd = xsk_socket__fd(xin), .events = POLLIN};
	unsigned outstanding = 0;

	for (unsigned long long loop = 0; !stop; loop++) {
		if ((loop & 1023) == 0) {
			clock_gettime(CLOCK_MONOTONIC, &t);
			if (t.tv_sec - t0.tv_sec + (t.tv_nsec - t0.tv_nsec) * 1e-9 > duration)
				break;
		}
		/* Completions of the out socket: frames free again. */
		__u32 idx;
		unsigned n = xsk_ring_cons__peek(&out_comp, RING, &idx);
		for (unsigned i = 0; i < n; i++)
			free_frames[nfree++] = *xsk_ring_cons__comp_addr(&out_comp, idx + i);
		xsk_ring_cons__release(&out_comp, n);
		outstanding -= n;
		/* Keep the fill ring of the in socket full. */
		unsigned want = xsk_prod_nb_free(&fill, nfree);
		if (want > nfree)
			want = nfree;
		if (want && xsk_ring_prod__reserve(&fill, want, &idx) == want) {
			for (unsigned i = 0; i < want; i++)
				*xsk_ring_prod__fill_addr(&fill, idx + i) = free_frames[--nfree];
			xsk_ring_prod__submit(&fill, want);
		}
		n = xsk_ring_cons__peek(&rx, BATCH, &idx);
		if (!n) {
			if (outstanding)
				goto kick;
			polls++;
			poll(&pfd, 1, 1);
			continue;
		}
		__u32 tidx;
		unsigned room = xsk_ring_prod__reserve(&tx, n, &tidx);
		for (unsigned i = 0; i < n; i++) {
			const struct xdp_desc *d = xsk_ring_cons__rx_desc(&rx, idx + i);
			if (i >= room) {
				free_frames[nfree++] = d->addr;
				tx_full++;
				continue;
			}
			unsigned char *f = xsk_umem__get_data(area, d->addr);
			memcpy(f, dst_mac, 6);
			memcpy(f + 6, src_mac, 6);
			struct xdp_desc *o = xsk_ring_prod__tx_desc(&tx, tidx + i);
			o->addr = d->addr;
			o->len = d->len;
		}
		xsk_ring_cons__release(&rx, n);
		rx_pkts += n;
		if (room) {
			xsk_ring_prod__submit(&tx, room);
			tx_pkts += room;
			outstanding += room;
		}
kick:
		/* Copy mode transmits only inside the syscall. */
		if (xsk_ring_prod__needs_wakeup(&tx) || bind == XDP_COPY) {
			kicks++;
			sendto(xsk_socket__fd(xout), NULL, 0, MSG_DONTWAIT, NULL, 0);
		}
	}
	printf("{\"rx\": %llu, \"tx\": %llu, \"tx_ring_full\": %llu, \"kicks\": %llu, "
	       "\"idle_polls\": %llu}\n", rx_pkts, tx_pkts, tx_full, kicks, polls);
	xsk_socket__delete(xout);
	xsk_socket__delete(xin);
	xsk_umem__delete(umem);
	return 0;
}
