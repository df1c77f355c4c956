/* Corridor's sink: attaches sink.bpf.o (count, timestamp, drop) to a veth in native mode
 * and answers commands on stdin, one a line, with one JSON line on stdout:
 *   read  -> {"pkts": N, "bytes": N, "other": N, "late": N, "hist": [[bucket, count], ...]}
 *   quit  -> detaches and exits (so do EOF on stdin and --max-seconds, whichever is first).
 * Counters are cumulative: the caller takes differences between two reads. */
#include <errno.h>
#include <getopt.h>
#include <net/if.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <linux/bpf.h>
#include <linux/if_link.h>
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include "bench.h"
#include "cli.h"

static int ncpu;

static __u64 sum_percpu(int fd, __u32 key)
{
	__u64 v[512] = {0}, s = 0;
	if (bpf_map_lookup_elem(fd, &key, v))
		return 0;
	for (int i = 0; i < ncpu; i++)
		s += v[i];
	return s;
}

int main(int argc, char **argv)
{
	const char *dev = NULL, *obj_path = NULL;
	double max_seconds = 3600;
	static const struct option opts[] = {
		{"dev", 1, 0, 'd'}, {"obj", 1, 0, 'o'}, {"max-seconds", 1, 0, 'x'}, {0},
	};
	for (int c; (c = getopt_long(argc, argv, "", opts, NULL)) != -1;) {
		if (c == 'd') dev = optarg;
		else if (c == 'o') obj_path = optarg;
		else if (c == 'x') {
			if (parse_double(optarg, &max_seconds) || max_seconds <= 0) {
				fprintf(stderr, "sink: --max-seconds %s: expected seconds > 0\n", optarg);
				return 2;
			}
		}
		else { fprintf(stderr, "usage: sink --dev DEV [--max-seconds S]\n"); return 2; }
	}
	if (!dev) {
		fprintf(stderr, "sink: --dev is required\n");
		return 2;
	}
	int ifindex = (int)if_nametoindex(dev);
	if (!ifindex) {
		fprintf(stderr, "sink: --dev %s: no such interface in this namespace\n", dev);
		return 2;
	}
	ncpu = libbpf_num_possible_cpus();
	if (ncpu > 512) ncpu = 512;
	char path[4096];
	if (!obj_path) {
		ssize_t n = readlink("/proc/self/exe", path, sizeof path - 16);
		if (n < 0) return 2;
		path[n] = 0;
		strcpy(strrchr(path, '/') + 1, "sink.bpf.o");
		obj_path = path;
	}
	libbpf_set_print(NULL);
	struct bpf_object *obj = bpf_object__open_file(obj_path, NULL);
	if (!obj || bpf_object__load(obj)) {
		fprintf(stderr, "sink: cannot load %s\n", obj_path);
		return 2;
	}
	int prog = bpf_program__fd(bpf_object__find_program_by_name(obj, "sink"));
	int counters = bpf_object__find_map_fd_by_name(obj, "counters");
	int hist = bpf_object__find_map_fd_by_name(obj, "hist");
	if (bpf_xdp_attach(ifindex, prog, XDP_FLAGS_DRV_MODE, NULL)) {
		fprintf(stderr, "sink: cannot attach XDP to %s: %s\n", dev, strerror(errno));
		return 2;
	}
	signal(SIGPIPE, SIG_IGN);
	printf("{\"ready\": true}\n");
	fflush(stdout);
	time_t deadline = time(NULL) + (time_t)max_seconds;
	char line[64];
	for (;;) {
		struct pollfd p = {.fd = 0, .events = POLLIN};
		int left = (int)(deadline - time(NULL));
		if (left <= 0 || poll(&p, 1, left * 1000) <= 0)
			break;
		if (!fgets(line, sizeof line, stdin) || !strncmp(line, "quit", 4))
			break;
		if (strncmp(line, "read", 4))
			continue;
		printf("{\"pkts\": %llu, \"bytes\": %llu, \"other\": %llu, \"late\": %llu, \"hist\": [",
		       (unsigned long long)sum_percpu(counters, SINK_PKTS),
		       (unsigned long long)sum_percpu(counters, SINK_BYTES),
		       (unsigned long long)sum_percpu(counters, SINK_OTHER),
		       (unsigned long long)sum_percpu(counters, SINK_LATE));
		const char *sep = "";
		for (__u32 b = 0; b < HIST_BUCKETS; b++) {
			__u64 v = sum_percpu(hist, b);
			if (v) {
				printf("%s[%u, %llu]", sep, b, (unsigned long long)v);
				sep = ", ";
			}
		}
		printf("]}\n");
		fflush(stdout);
	}
	bpf_xdp_detach(ifindex, XDP_FLAGS_DRV_MODE, NULL);
	bpf_object__close(obj);
	return 0;
}
