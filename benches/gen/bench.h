/* Shared between the generator, the sink and their BPF programs: the test signature that
 * the generator writes after the UDP header and the sink reads back, and the latency
 * histogram layout. */
#ifndef CORRIDOR_BENCH_H
#define CORRIDOR_BENCH_H

#define BENCH_MAGIC 0xC0441D07u /* "corridor", in the first 4 payload bytes */
#define BENCH_SIG_LEN 12        /* magic (4) + CLOCK_MONOTONIC send time in ns (8) */
#define MAX_DSTS 4096           /* destination addresses the flows cycle through */

/* Latency histogram, log-linear: below 1024 ns, 16 buckets of 64 ns; above, 16 buckets
 * per power of two (error under 6.25 %), up to 2^41 ns. */
#define HIST_LINEAR 16
#define HIST_SUB 16
#define HIST_BUCKETS (HIST_LINEAR + (41 - 10) * HIST_SUB)

/* Per-CPU counters of the sink, index into the `counters` array map. */
enum sink_counter {
	SINK_PKTS,     /* frames carrying the signature */
	SINK_BYTES,    /* their bytes (without FCS) */
	SINK_OTHER,    /* frames without it, dropped too (ARP and ND are passed, not counted) */
	SINK_LATE,     /* signatures from the future or older than 2^41 ns: not in the histogram */
	SINK_NCOUNTERS,
};

struct gen_config {
	__u32 ndst;     /* destinations in `dsts` */
	__u32 nflows;   /* flows = (destination, source port) pairs cycled through */
	__u32 family;   /* 4 or 6 */
	__u32 frame_len;/* bytes from Ethernet header to the end, without FCS */
	__u64 interval; /* ns between frames, times 256 (0: as fast as possible) */
};

/* The generator's state, one per-CPU slot (one generator thread). */
struct gen_state {
	__u64 seq;      /* frames sent */
	__u64 next_due; /* send time of the next frame, ns times 256 */
	__u64 idle;     /* runs that found no frame due (XDP_DROP) */
	__u64 forgiven; /* times a lag of more than CATCH_UP frames was forgiven */
	__u64 first_ns; /* the first run's time */
	__u64 last_ns;  /* the latest run's time */
	__u64 gap_ns;   /* time in gaps of more than GAP_NS between two runs (call set-up,
			 * preemption): nothing was offered then */
};

#endif
