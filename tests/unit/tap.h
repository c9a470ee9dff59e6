/* tap.h — minimal TAP for the C unit tests. Each check prints "ok N - name"
 * or "not ok N - name" followed by "# " lines saying what differed. */
#ifndef SEVA_TAP_H
#define SEVA_TAP_H

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int tap_n, tap_failed;

static inline int tap_ok(int cond, const char *fmt, ...)
{
	va_list ap;
	printf("%sok %d - ", cond ? "" : "not ", ++tap_n);
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	printf("\n");
	fflush(stdout);
	if (!cond)
		tap_failed++;
	return cond;
}

/* Diagnostic lines ("# ...") under the last check. */
static inline void tap_diag(const char *fmt, ...)
{
	va_list ap;
	printf("# ");
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	printf("\n");
}

/* "# LABEL [1,2,3]": a list of ids under the last check. */
static inline void tap_diag_ids(const char *label, const int *ids, int n)
{
	printf("# %s [", label);
	for (int i = 0; i < n; i++)
		printf("%s%d", i ? "," : "", ids[i]);
	printf("]\n");
}

/* Tests name their fixtures from the top of the tree: if PROBE cannot be
 * read from here, moves there, found from ARGV0 (TOP/tests/bin/test_x). */
static inline void tap_chdir_top(const char *argv0, const char *probe)
{
	if (access(probe, R_OK) == 0)
		return;
	char *top = strdup(argv0);
	for (int i = 0; top && i < 3; i++) {
		char *s = strrchr(top, '/');
		if (s)
			*s = 0;
	}
	if (!top || chdir(top) != 0)
		tap_diag("cannot find %s: run from the top of the tree", probe);
	free(top);
}

/* Max |a-b| / (atol + rtol*|b|) over n floats; prints the worst index when > 1. */
static inline int tap_close(const float *a, const float *b, long n, float atol, float rtol,
			    const char *what)
{
	double worst = 0;
	long wi = 0;
	for (long i = 0; i < n; i++) {
		double d = fabs((double)a[i] - (double)b[i]);
		double r = d / (atol + rtol * fabs((double)b[i]));
		if (!(r <= worst)) { /* NaN counts as worst */
			worst = isnan(r) ? INFINITY : r;
			wi = i;
			if (isnan(r))
				break;
		}
	}
	int ok = tap_ok(worst <= 1.0, "%s (n=%ld)", what, n);
	if (!ok)
		tap_diag("worst at [%ld]: got %.9g want %.9g (|diff| %.3g, atol %g rtol %g)", wi,
			 (double)a[wi], (double)b[wi], fabs((double)a[wi] - (double)b[wi]), atol, rtol);
	return ok;
}

/* Ends the test: prints the plan, exits non-zero if anything failed. */
static inline int tap_done(void)
{
	printf("1..%d\n", tap_n);
	return tap_failed ? 1 : 0;
}

#endif
