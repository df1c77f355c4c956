/* Strict parsing of the benchmark tools' command-line values: a value is taken whole or
 * refused (sscanf and strtod alone accept "02:..:0x", "64abc", "nan"). Shared by gen, sink
 * and afxdp_ref. */
#ifndef CORRIDOR_BENCH_CLI_H
#define CORRIDOR_BENCH_CLI_H

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* xx:xx:xx:xx:xx:xx, hex digits only; 0 when parsed. */
static inline int parse_mac(const char *s, unsigned char *m)
{
	if (!s || strlen(s) != 17)
		return -1;
	for (int i = 0; i < 6; i++) {
		const char *p = s + 3 * i;
		if (!isxdigit((unsigned char)p[0]) || !isxdigit((unsigned char)p[1]) ||
		    (i < 5 && p[2] != ':'))
			return -1;
		char byte[3] = {p[0], p[1], 0};
		m[i] = (unsigned char)strtoul(byte, NULL, 16);
	}
	return 0;
}

/* A finite decimal number, nothing after it; 0 when parsed. */
static inline int parse_double(const char *s, double *out)
{
	char *end;
	errno = 0;
	double v = strtod(s, &end);
	if (!*s || *end || errno || !isfinite(v))
		return -1;
	*out = v;
	return 0;
}

/* A non-negative integer below 2^32, nothing after it; 0 when parsed. */
static inline int parse_uint(const char *s, unsigned *out)
{
	char *end;
	errno = 0;
	if (!*s || *s == '-')
		return -1;
	unsigned long v = strtoul(s, &end, 10);
	if (*end || errno || v > 0xffffffffUL)
		return -1;
	*out = (unsigned)v;
	return 0;
}

#endif
