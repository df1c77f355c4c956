// DPDK's FIBs on the FIB benchmark's keys: rte_fib (DIR-24-8) and rte_lpm for IPv4,
// rte_fib6 (trie) and rte_lpm6 for IPv6, loaded with the same real tables as Corridor's
// FIB benchmark (benches/benches/fib.rs) and timed on the same keys in bulk lookups of 64.
// A baseline, not product code: the figures are what benches/fib_dpdk.py sets beside
// Corridor's in the same run.
//
// fib_harness [EAL args] -- KEYDIR [--reps N] [--check-only] [--skip IMPL,...]
//
// --skip rte_lpm leaves rte_lpm out: its full-table load takes minutes (see load()).
// KEYDIR is what `fib_keys` wrote (manifest.txt, NAME.keys, NAME.want): route i of a
// table has next hop i here and group i % GROUPS in Corridor, so every answer is checked
// against Corridor's for every key (a mismatch is printed and the exit status is 1).
// Each structure is sized to the table: its tbl8 pool is the smallest (to 1/32) that
// loads the table, found by trial loads, and its rule/route capacity is the table's size,
// so the memory figures are DPDK's best case.
//
// Output, one line per figure:
//   LOAD table=PATH impl=NAME routes=N tbl8=N load_s=S heap_mib=M rss_mib=M
//   RESULT contest=NAME impl=NAME keys=N mlps=M mismatches=N
#include <arpa/inet.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <zlib.h>

#include <rte_eal.h>
#include <rte_errno.h>
#include <rte_fib.h>
#include <rte_fib6.h>
#include <rte_lpm.h>
#include <rte_lpm6.h>
#include <rte_malloc.h>

#define BATCH 64
#define NONE 0x7fffffffu /* DIR24_8_4B's and TRIE_4B's largest next hop: "no route" */

struct route {
	uint8_t addr[16]; /* IPv4: first 4 bytes, network order */
	uint8_t len;
};

struct table {
	char path[512];
	int family;
	struct route *r;
	size_t n;
};

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static double heap_bytes(void)
{
	struct rte_malloc_socket_stats st;
	if (rte_malloc_get_socket_stats(0, &st) != 0)
		return 0;
	return (double)st.heap_allocsz_bytes;
}

static double rss_bytes(void)
{
	long pages = 0, rss = 0;
	FILE *f = fopen("/proc/self/statm", "r");
	if (f) {
		if (fscanf(f, "%ld %ld", &pages, &rss) != 2)
			rss = 0;
		fclose(f);
	}
	return rss * 4096.0;
}

static void read_table(struct table *t)
{
	gzFile f = gzopen(t->path, "rb");
	if (!f) {
		fprintf(stderr, "fib_harness: %s: %s\n", t->path, strerror(errno));
		exit(2);
	}
	size_t cap = 1 << 20;
	t->r = malloc(cap * sizeof(*t->r));
	t->n = 0;
	char line[256];
	while (gzgets(f, line, sizeof line)) {
		char *sp = strpbrk(line, " \t\r\n");
		if (sp)
			*sp = 0;
		char *slash = strchr(line, '/');
		if (!slash)
			continue;
		*slash = 0;
		if (t->n == cap) {
			cap *= 2;
			t->r = realloc(t->r, cap * sizeof(*t->r));
		}
		struct route *r = &t->r[t->n];
		memset(r, 0, sizeof(*r));
		if (inet_pton(t->family == 4 ? AF_INET : AF_INET6, line, r->addr) != 1) {
			fprintf(stderr, "fib_harness: %s: bad prefix %s\n", t->path, line);
			exit(2);
		}
		r->len = (uint8_t)atoi(slash + 1);
		t->n++;
	}
	gzclose(f);
}

static uint32_t v4(const struct route *r)
{
	uint32_t a;
	memcpy(&a, r->addr, 4);
	return ntohl(a);
}

/* One DPDK structure behind a common face: create for a tbl8 pool size, load, look up
 * a batch (next hop i for route i, NONE for no route), free. */
struct impl {
	const char *name;
	int family;
	void *(*create)(const struct table *, uint32_t tbl8);
	int (*add)(void *, const struct route *, uint32_t nh);
	void (*lookup)(void *, const void *keys, uint32_t *out, unsigned n);
	/* The timed call: DPDK's bulk lookup alone, its results left in its own format */
	void (*raw)(void *, const void *keys, void *out, unsigned n);
	void (*destroy)(void *);
	uint32_t first_tbl8;
};

static int serial;

static void *fib4_create(const struct table *t, uint32_t tbl8)
{
	char name[32];
	snprintf(name, sizeof name, "fib4_%d", serial++);
	struct rte_fib_conf c = {.type = RTE_FIB_DIR24_8, .default_nh = NONE, .max_routes = (int)t->n};
	c.dir24_8.nh_sz = RTE_FIB_DIR24_8_4B;
	c.dir24_8.num_tbl8 = tbl8;
	return rte_fib_create(name, SOCKET_ID_ANY, &c);
}
static int fib4_add(void *h, const struct route *r, uint32_t nh) { return rte_fib_add(h, v4(r), r->len, nh); }
static void fib4_lookup(void *h, const void *keys, uint32_t *out, unsigned n)
{
	uint64_t nh[BATCH];
	rte_fib_lookup_bulk(h, (uint32_t *)keys, nh, (int)n);
	for (unsigned i = 0; i < n; i++)
		out[i] = (uint32_t)nh[i];
}
static void fib4_raw(void *h, const void *keys, void *out, unsigned n)
{
	rte_fib_lookup_bulk(h, (uint32_t *)keys, out, (int)n);
}
static void fib4_free(void *h) { rte_fib_free(h); }

static void *lpm4_create(const struct table *t, uint32_t tbl8)
{
	char name[32];
	snprintf(name, sizeof name, "lpm4_%d", serial++);
	struct rte_lpm_config c = {.max_rules = (uint32_t)t->n, .number_tbl8s = tbl8};
	return rte_lpm_create(name, SOCKET_ID_ANY, &c);
}
static int lpm4_add(void *h, const struct route *r, uint32_t nh) { return rte_lpm_add(h, v4(r), r->len, nh); }
static void lpm4_lookup(void *h, const void *keys, uint32_t *out, unsigned n)
{
	rte_lpm_lookup_bulk((struct rte_lpm *)h, (const uint32_t *)keys, out, n);
	for (unsigned i = 0; i < n; i++)
		out[i] = (out[i] & RTE_LPM_LOOKUP_SUCCESS) ? (out[i] & 0x00ffffff) : NONE;
}
static void lpm4_raw(void *h, const void *keys, void *out, unsigned n)
{
	rte_lpm_lookup_bulk((struct rte_lpm *)h, (const uint32_t *)keys, out, n);
}
static void lpm4_free(void *h) { rte_lpm_free(h); }

static void *fib6_create(const struct table *t, uint32_t tbl8)
{
	char name[32];
	snprintf(name, sizeof name, "fib6_%d", serial++);
	struct rte_fib6_conf c = {.type = RTE_FIB6_TRIE, .default_nh = NONE, .max_routes = (int)t->n};
	c.trie.nh_sz = RTE_FIB6_TRIE_4B;
	c.trie.num_tbl8 = tbl8;
	return rte_fib6_create(name, SOCKET_ID_ANY, &c);
}
static int fib6_add(void *h, const struct route *r, uint32_t nh) { return rte_fib6_add(h, r->addr, r->len, nh); }
static void fib6_lookup(void *h, const void *keys, uint32_t *out, unsigned n)
{
	uint64_t nh[BATCH];
	rte_fib6_lookup_bulk(h, (uint8_t(*)[16])keys, nh, (int)n);
	for (unsigned i = 0; i < n; i++)
		out[i] = (uint32_t)nh[i];
}
static void fib6_raw(void *h, const void *keys, void *out, unsigned n)
{
	rte_fib6_lookup_bulk(h, (uint8_t(*)[16])keys, out, (int)n);
}
static void fib6_free(void *h) { rte_fib6_free(h); }

static void *lpm6_create(const struct table *t, uint32_t tbl8)
{
	char name[32];
	snprintf(name, sizeof name, "lpm6_%d", serial++);
	struct rte_lpm6_config c = {.max_rules = (uint32_t)t->n, .number_tbl8s = tbl8};
	return rte_lpm6_create(name, SOCKET_ID_ANY, &c);
}
static int lpm6_add(void *h, const struct route *r, uint32_t nh) { return rte_lpm6_add(h, r->addr, r->len, nh); }
static void lpm6_lookup(void *h, const void *keys, uint32_t *out, unsigned n)
{
	int32_t nh[BATCH];
	rte_lpm6_lookup_bulk_func(h, (uint8_t(*)[16])keys, nh, n);
	for (unsigned i = 0; i < n; i++)
		out[i] = nh[i] < 0 ? NONE : (uint32_t)nh[i];
}
static void lpm6_raw(void *h, const void *keys, void *out, unsigned n)
{
	rte_lpm6_lookup_bulk_func(h, (uint8_t(*)[16])keys, out, n);
}
static void lpm6_free(void *h) { rte_lpm6_free(h); }

static const struct impl IMPLS[] = {
	{"rte_fib", 4, fib4_create, fib4_add, fib4_lookup, fib4_raw, fib4_free, 1024},
	{"rte_lpm", 4, lpm4_create, lpm4_add, lpm4_lookup, lpm4_raw, lpm4_free, 1024},
	{"rte_fib6", 6, fib6_create, fib6_add, fib6_lookup, fib6_raw, fib6_free, 16384},
	{"rte_lpm6", 6, lpm6_create, lpm6_add, lpm6_lookup, lpm6_raw, lpm6_free, 16384},
};

/* Create and load with `tbl8` tbl8s: the handle, or NULL when the pool is too small. */
static double heap_delta, rss_delta; /* of the last load that fit */

static void *try_load(const struct impl *im, const struct table *t, uint32_t tbl8, double *secs)
{
	double heap0 = heap_bytes(), rss0 = rss_bytes();
	void *h = im->create(t, tbl8);
	if (!h) {
		fprintf(stderr, "fib_harness: %s create (tbl8 %u): %s\n", im->name, tbl8, rte_strerror(rte_errno));
		exit(2);
	}
	double t0 = now();
	for (size_t i = 0; i < t->n; i++) {
		int rc = im->add(h, &t->r[i], (uint32_t)i);
		if (rc == -ENOSPC) {
			im->destroy(h);
			return NULL;
		}
		if (rc != 0) {
			fprintf(stderr, "fib_harness: %s add route %zu: %s\n", im->name, i, strerror(-rc));
			exit(2);
		}
	}
	*secs = now() - t0;
	heap_delta = heap_bytes() - heap0;
	rss_delta = rss_bytes() - rss0;
	return h;
}

/* The smallest tbl8 pool (to 1/32) that holds the table, then a timed load with it.
 * With a `hint` (rte_lpm: rte_fib's pool, the same DIR-24-8 layout), only that pool,
 * doubled until it fits: rte_lpm's rule table is a sorted array searched linearly on
 * every add, so a full-table load takes minutes and trial loads are out of reach. */
static void *load(const struct impl *im, const struct table *t, uint32_t hint, uint32_t *sized)
{
	double secs;
	uint32_t hi = hint ? hint : im->first_tbl8, lo = 0;
	void *h;
	if (hint) {
		while (!(h = try_load(im, t, hi, &secs)))
			hi *= 2;
		goto done;
	}
	while (!(h = try_load(im, t, hi, &secs))) {
		lo = hi;
		hi *= 2;
	}
	im->destroy(h);
	while (hi - lo > hi / 32) {
		uint32_t mid = lo + (hi - lo) / 2;
		if ((h = try_load(im, t, mid, &secs))) {
			im->destroy(h);
			hi = mid;
		} else {
			lo = mid;
		}
	}
	h = try_load(im, t, hi, &secs);
done:
	*sized = hi;
	printf("LOAD table=%s impl=%s routes=%zu tbl8=%u load_s=%.3f heap_mib=%.1f rss_mib=%.1f\n", t->path, im->name, t->n,
	       hi, secs, heap_delta / 1048576.0, rss_delta / 1048576.0);
	fflush(stdout);
	return h;
}

static void *slurp(const char *dir, const char *name, const char *ext, size_t want)
{
	char path[1024];
	snprintf(path, sizeof path, "%s/%s.%s", dir, name, ext);
	FILE *f = fopen(path, "rb");
	if (!f) {
		fprintf(stderr, "fib_harness: %s: %s\n", path, strerror(errno));
		exit(2);
	}
	void *b = malloc(want);
	if (fread(b, 1, want, f) != want) {
		fprintf(stderr, "fib_harness: %s: shorter than %zu bytes\n", path, want);
		exit(2);
	}
	fclose(f);
	return b;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return (x > y) - (x < y);
}

/* Check every answer against Corridor's, then time `reps` passes: lookups per second of
 * the median pass (as `rate` in benches/benches/fib.rs). */
static int contest(const struct impl *im, void *h, const char *name, const uint8_t *keys, const uint32_t *want, size_t n,
		   uint32_t groups, int reps)
{
	size_t ksz = im->family == 4 ? 4 : 16;
	uint32_t out[BATCH];
	size_t bad = 0;
	for (size_t i = 0; i < n; i += BATCH) {
		unsigned m = (unsigned)(n - i < BATCH ? n - i : BATCH);
		im->lookup(h, keys + i * ksz, out, m);
		for (unsigned j = 0; j < m; j++) {
			uint32_t got = out[j] == NONE ? UINT32_MAX : out[j] % groups;
			if (got != want[i + j] && bad++ < 5)
				fprintf(stderr, "fib_harness: %s %s key %zu: DPDK group %u, Corridor %u\n", name, im->name, i + j, got,
					want[i + j]);
		}
	}
	/* Timed: the bulk call alone (no conversion of its results), as Corridor's timed
	 * loop is `lookup_*_batch` alone. */
	double t[16];
	uint64_t sink = 0, raw[BATCH];
	for (int r = 0; r < reps; r++) {
		double t0 = now();
		for (size_t i = 0; i + BATCH <= n; i += BATCH) {
			im->raw(h, keys + i * ksz, raw, BATCH);
			sink += raw[0];
		}
		t[r] = now() - t0;
	}
	qsort(t, (size_t)reps, sizeof t[0], cmp_double);
	printf("RESULT contest=%s impl=%s keys=%zu mlps=%.2f mismatches=%zu sink=%llu\n", name, im->name, n,
	       reps ? (double)(n / BATCH * BATCH) / t[reps / 2] / 1e6 : 0.0, bad, (unsigned long long)(sink & 1));
	fflush(stdout);
	return bad != 0;
}

/* Whether `name` is an item of the comma-separated `list`. */
static int listed(const char *list, const char *name)
{
	size_t n = strlen(name);
	for (const char *p = list; (p = strstr(p, name)); p += n)
		if ((p == list || p[-1] == ',') && (p[n] == 0 || p[n] == ','))
			return 1;
	return 0;
}

int main(int argc, char **argv)
{
	int used = rte_eal_init(argc, argv);
	if (used < 0) {
		fprintf(stderr, "fib_harness: EAL init: %s\n", rte_strerror(rte_errno));
		return 2;
	}
	argc -= used;
	argv += used;
	const char *dir = NULL, *skip = "";
	int reps = 5;
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--reps") && i + 1 < argc)
			reps = atoi(argv[++i]);
		else if (!strcmp(argv[i], "--skip") && i + 1 < argc)
			skip = argv[++i];
		else if (!strcmp(argv[i], "--check-only"))
			reps = 0;
		else if (argv[i][0] != '-' && !dir)
			dir = argv[i];
		else {
			fprintf(stderr, "usage: fib_harness [EAL args] -- KEYDIR [--reps N] [--check-only] [--skip IMPL,...]\n");
			return 2;
		}
	}
	if (!dir || reps < 0 || reps > 16) {
		fprintf(stderr, "usage: fib_harness [EAL args] -- KEYDIR [--reps N (0-16)] [--check-only] [--skip IMPL,...]\n");
		return 2;
	}
	char mpath[1024];
	snprintf(mpath, sizeof mpath, "%s/manifest.txt", dir);
	FILE *mf = fopen(mpath, "r");
	if (!mf) {
		fprintf(stderr, "fib_harness: %s: %s (run fib_keys first)\n", mpath, strerror(errno));
		return 2;
	}
	/* Contests sharing a table are consecutive in the manifest: load each table once. */
	struct table t = {0};
	void *handles[4] = {0};
	uint32_t sized[4] = {0};
	int failed = 0;
	char name[128], path[512];
	int family;
	size_t n;
	uint32_t groups;
	while (fscanf(mf, "%127s %d %511s %zu %u", name, &family, path, &n, &groups) == 5) {
		if (strcmp(path, t.path) != 0) {
			for (int i = 0; i < 4; i++)
				if (handles[i])
					IMPLS[i].destroy(handles[i]), handles[i] = NULL;
			free(t.r);
			snprintf(t.path, sizeof t.path, "%s", path);
			t.family = family;
			read_table(&t);
			/* rte_fib, rte_lpm, rte_fib6, rte_lpm6: each lpm sized from the fib before it */
			for (int i = 0; i < 4; i++)
				if (IMPLS[i].family == family && !listed(skip, IMPLS[i].name))
					handles[i] = load(&IMPLS[i], &t, i == 1 ? sized[0] : 0, &sized[i]);
		}
		uint8_t *keys = slurp(dir, name, "keys", n * (family == 4 ? 4 : 16));
		uint32_t *want = slurp(dir, name, "want", n * 4);
		for (int i = 0; i < 4; i++)
			if (handles[i])
				failed |= contest(&IMPLS[i], handles[i], name, keys, want, n, groups, reps);
		free(keys);
		free(want);
	}
	fclose(mf);
	rte_eal_cleanup();
	return failed;
}
