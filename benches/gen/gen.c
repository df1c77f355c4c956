/* Corridor's traffic generator: builds frames in an XDP program run by BPF_PROG_RUN in
 * live-frames mode (BPF_F_TEST_XDP_LIVE_FRAMES) and sends them with XDP_TX out of a veth, at
 * an offered rate and for a bounded time. Flows cycle through the destinations of a file
 * (each must be inside 198.18.0.0/15 or 2001:db8::/32: anything else is refused) and UDP
 * source ports. Prints one JSON line: frames sent, seconds, achieved rate.
 *
 *   gen --dev gen0 --src-mac M --dst-mac M --src ADDR --dsts FILE --size 64 \
 *       --rate 1000000 --duration 10 [--flows N] [--burst 64]
 *
 * --size is the wire size (with the 4-byte FCS); --rate 0 sends as fast as possible. */
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <net/if.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/udp.h>
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include "bench.h"
#include "cli.h"

#define MAX_DURATION 600.0
#define HDR6 (14 + 40 + 8)

static volatile sig_atomic_t stop;
static void on_signal(int sig) { (void)sig; stop = 1; }

static void die(const char *fmt, const char *arg)
{
	fprintf(stderr, "gen: ");
	fprintf(stderr, fmt, arg);
	fputc('\n', stderr);
	exit(2);
}

/* Test space only: 198.18.0.0/15 (RFC 2544) and 2001:db8::/32 (RFC 3849). */
static int in_test_space(int family, const void *a)
{
	const unsigned char *b = a;
	if (family == 4)
		return b[0] == 198 && (b[1] & 0xfe) == 18;
	return b[0] == 0x20 && b[1] == 0x01 && b[2] == 0x0d && b[3] == 0xb8;
}

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec * 1e-9;
}

int main(int argc, char **argv)
{
	const char *dev = NULL, *src_mac = NULL, *dst_mac = NULL, *src = NULL, *dsts_path = NULL;
	const char *obj_path = NULL;
	unsigned size = 64, flows = 0, burst = 64;
	double rate = 0, duration = 1;
	static const struct option opts[] = {
		{"dev", 1, 0, 'd'}, {"src-mac", 1, 0, 'm'}, {"dst-mac", 1, 0, 'M'},
		{"src", 1, 0, 's'}, {"dsts", 1, 0, 'D'}, {"size", 1, 0, 'z'},
		{"rate", 1, 0, 'r'}, {"duration", 1, 0, 't'}, {"flows", 1, 0, 'f'},
		{"burst", 1, 0, 'b'}, {"obj", 1, 0, 'o'}, {0},
	};
	for (int c; (c = getopt_long(argc, argv, "", opts, NULL)) != -1;) {
		switch (c) {
		case 'd': dev = optarg; break;
		case 'm': src_mac = optarg; break;
		case 'M': dst_mac = optarg; break;
		case 's': src = optarg; break;
		case 'D': dsts_path = optarg; break;
		case 'z': if (parse_uint(optarg, &size)) die("--size %s: expected a number", optarg); break;
		case 'r': if (parse_double(optarg, &rate) || rate < 0)
				die("--rate %s: expected frames/s >= 0 (0: as fast as possible)", optarg);
			break;
		case 't': if (parse_double(optarg, &duration))
				die("--duration %s: expected seconds", optarg);
			break;
		case 'f': if (parse_uint(optarg, &flows)) die("--flows %s: expected a number", optarg); break;
		case 'b': if (parse_uint(optarg, &burst)) die("--burst %s: expected a number", optarg); break;
		case 'o': obj_path = optarg; break;
		default: die("%s", "usage: see the head of gen.c");
		}
	}
	if (!dev || !src_mac || !dst_mac || !src || !dsts_path)
		die("%s", "--dev, --src-mac, --dst-mac, --src and --dsts are required");
	if (!(duration > 0 && duration <= MAX_DURATION)) {
		char v[32];
		snprintf(v, sizeof v, "%g", duration);
		die("--duration %s: must be in (0, 600] seconds", v);
	}
	if (burst < 1 || burst > 256)
		die("%s", "--burst must be 1 to 256");
	int ifindex = if_nametoindex(dev);
	if (!ifindex)
		die("--dev %s: no such interface in this namespace", dev);
	/* Frames leave by XDP_TX toward the device's peer: never on loopback, where they would
	 * reach this host's own stack. */
	struct ifreq ifr = {0};
	int probe = socket(AF_INET, SOCK_DGRAM, 0);
	snprintf(ifr.ifr_name, sizeof ifr.ifr_name, "%s", dev);
	if (probe < 0 || ioctl(probe, SIOCGIFFLAGS, &ifr) < 0)
		die("--dev %s: cannot read its flags", dev);
	close(probe);
	if (ifr.ifr_flags & IFF_LOOPBACK)
		die("--dev %s: a loopback device: the generator sends only on a link to a router", dev);

	/* The template: Ethernet, IP, UDP 1024 -> 9 (discard), zero payload. */
	int family = strchr(src, ':') ? 6 : 4;
	unsigned hdr = family == 4 ? 14 + 20 + 8 : HDR6;
	unsigned frame_len = size - 4;
	if (frame_len < hdr + BENCH_SIG_LEN || frame_len > 1514) {
		char msg[64];
		snprintf(msg, sizeof msg, "%u", size);
		die("--size %s: the frame must hold the headers and the signature and be at most "
		    "1518 bytes (IPv4 >= 58, IPv6 >= 78)", msg);
	}
	static unsigned char frame[2048];
	struct { unsigned char b[HDR6]; } tmpl = {0};
	if (parse_mac(dst_mac, frame) || parse_mac(src_mac, frame + 6))
		die("%s", "--src-mac / --dst-mac: expected xx:xx:xx:xx:xx:xx");
	struct in6_addr a6;
	struct udphdr *udp;
	if (family == 4) {
		struct iphdr *ip = (void *)(frame + 14);
		frame[12] = 0x08, frame[13] = 0x00;
		ip->version = 4, ip->ihl = 5, ip->ttl = 64, ip->protocol = IPPROTO_UDP;
		ip->tot_len = htons(frame_len - 14);
		if (inet_pton(AF_INET, src, &ip->saddr) != 1 || !in_test_space(4, &ip->saddr))
			die("--src %s: expected an IPv4 address in 198.18.0.0/15", src);
		udp = (void *)(ip + 1);
	} else {
		struct ipv6hdr *ip6 = (void *)(frame + 14);
		frame[12] = 0x86, frame[13] = 0xdd;
		ip6->version = 6, ip6->hop_limit = 64, ip6->nexthdr = IPPROTO_UDP;
		ip6->payload_len = htons(frame_len - 14 - 40);
		if (inet_pton(AF_INET6, src, &ip6->saddr) != 1 || !in_test_space(6, &ip6->saddr))
			die("--src %s: expected an IPv6 address in 2001:db8::/32", src);
		udp = (void *)(ip6 + 1);
	}
	udp->source = htons(1024), udp->dest = htons(9);
	udp->len = htons(frame_len - hdr + 8);
	memcpy(tmpl.b, frame, hdr);

	/* Destinations: one address a line, all of the source's family, all in test space. */
	FILE *f = fopen(dsts_path, "r");
	if (!f)
		die("--dsts %s: cannot open", dsts_path);
	static struct in6_addr dsts[MAX_DSTS];
	unsigned ndst = 0;
	char line[128];
	while (fgets(line, sizeof line, f)) {
		line[strcspn(line, " \t\r\n")] = 0;
		if (!*line)
			continue;
		if (ndst == MAX_DSTS)
			die("--dsts: more than %s destinations", "4096");
		memset(&a6, 0, sizeof a6);
		if (inet_pton(family == 4 ? AF_INET : AF_INET6, line, &a6) != 1 ||
		    !in_test_space(family, &a6))
			die("destination %s: not an address of the source's family inside "
			    "198.18.0.0/15 or 2001:db8::/32", line);
		dsts[ndst++] = a6;
	}
	fclose(f);
	if (!ndst)
		die("--dsts %s: no destination", dsts_path);
	if (!flows)
		flows = ndst * 16;

	/* The program, next to this binary unless --obj says otherwise. */
	char path[4096];
	if (!obj_path) {
		ssize_t n = readlink("/proc/self/exe", path, sizeof path - 16);
		if (n < 0)
			die("%s", "cannot find my own path");
		path[n] = 0;
		strcpy(strrchr(path, '/') + 1, "gen.bpf.o");
		obj_path = path;
	}
	libbpf_set_print(NULL);
	struct bpf_object *obj = bpf_object__open_file(obj_path, NULL);
	if (!obj || bpf_object__load(obj))
		die("cannot load %s (root? clang-built object next to gen?)", obj_path);
	struct bpf_program *prog = bpf_object__find_program_by_name(obj, "gen");
	int cfg_fd = bpf_object__find_map_fd_by_name(obj, "config");
	int tmpl_fd = bpf_object__find_map_fd_by_name(obj, "template");
	int dsts_fd = bpf_object__find_map_fd_by_name(obj, "dsts");
	__u32 zero = 0;
	struct gen_config cfg = {.ndst = ndst, .nflows = flows, .family = family,
				 .frame_len = frame_len,
				 .interval = rate > 0 ? (__u64)(256e9 / rate) : 0};
	if (bpf_map_update_elem(cfg_fd, &zero, &cfg, 0) ||
	    bpf_map_update_elem(tmpl_fd, &zero, &tmpl, 0))
		die("%s", "cannot configure the program");
	for (__u32 i = 0; i < ndst; i++)
		if (bpf_map_update_elem(dsts_fd, &i, &dsts[i], 0))
			die("%s", "cannot store the destinations");

	signal(SIGINT, on_signal);
	signal(SIGTERM, on_signal);
	/* Calls of about `chunk` seconds: the first is short, the next ones scaled by its speed.
	 * Each call costs some 20 ms of set-up (page pool) in which nothing is sent; the
	 * program forgives that gap rather than catch it up in a burst, and measures it, so
	 * `active_seconds` (first to last run, gaps left out) is the time frames were offered
	 * and the rate given is the one offered while they flowed. */
	unsigned repeat = 20000;
	struct xdp_md ctx_in = {.data_end = frame_len, .ingress_ifindex = ifindex};
	LIBBPF_OPTS(bpf_test_run_opts, run, .data_in = frame, .data_size_in = frame_len,
		    .ctx_in = &ctx_in, .ctx_size_in = sizeof ctx_in,
		    .flags = BPF_F_TEST_XDP_LIVE_FRAMES, .repeat = repeat, .batch_size = burst);
	int fd = bpf_program__fd(prog);

	/* Each call runs the program `repeat` times; the program itself paces. Calls continue
	 * until the duration is over, the last one sized to what is left. */
	const double chunk = duration / 4 < 0.5 ? duration / 4 : 0.5; /* bounds the overrun */
	double start = now_s(), end = start + duration;
	int err = 0;
	for (double t = start; !stop && t < end;) {
		run.repeat = repeat;
		if (bpf_prog_test_run_opts(fd, &run)) {
			err = errno;
			break;
		}
		double t1 = now_s(), left = end - t1;
		double per_run = (t1 - t) / repeat, want = (left < chunk ? left : chunk) / per_run;
		repeat = want < 64 ? 64 : want > 500e6 ? 500000000 : (unsigned)want;
		t = t1;
	}
	double elapsed = now_s() - start;
	int ncpu = libbpf_num_possible_cpus();
	struct gen_state st[ncpu > 0 ? ncpu : 1];
	unsigned long long sent = 0, idle = 0, forgiven = 0, window = 0;
	if (!bpf_map_lookup_elem(bpf_object__find_map_fd_by_name(obj, "state"), &zero, st))
		for (int i = 0; i < ncpu; i++)
			if (st[i].first_ns) {
				sent += st[i].seq, idle += st[i].idle, forgiven += st[i].forgiven;
				window += st[i].last_ns - st[i].first_ns - st[i].gap_ns;
			}
	double active = window > 0 && window * 1e-9 <= elapsed ? window * 1e-9 : elapsed;
	printf("{\"sent\": %llu, \"seconds\": %.6f, \"active_seconds\": %.6f, \"pps\": %.1f, \"size\": %u, \"family\": %d, "
	       "\"flows\": %u, \"destinations\": %u, \"idle_runs\": %llu, \"forgiven\": %llu, \"error\": \"%s\"}\n",
	       sent, elapsed, active, sent / active, size, family, flows, ndst, idle, forgiven,
	       err ? strerror(err) : "");
	bpf_object__close(obj);
	return err ? 1 : 0;
}
