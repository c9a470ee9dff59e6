/* tap.h — minimal TAP for the C unit tests. Each check prints "ok N - name"
 * or "not ok N - name" followed by "# " lines saying what differed. */
#ifndef SEVA_TAP_H
#define SEVA_TAP_H

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

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
