/* test_util — argv numbers, buffers, atomic files (and that a device is
 * never replaced by one). */
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tap.h"
#include "util.h"

int main(void)
{
	long v;
	double d;
	tap_ok(parse_long("-n", "42", 0, 100, &v) == 0 && v == 42, "parse_long accepts 42");
	tap_ok(parse_long("-n", "4x", 0, 100, &v) < 0, "parse_long refuses trailing garbage");
	tap_ok(parse_long("-n", "101", 0, 100, &v) < 0, "parse_long refuses out of range");
	tap_ok(parse_long("-n", "", 0, 100, &v) < 0, "parse_long refuses empty");
	tap_ok(parse_double("--lr", "1e-3", 0, 1, &d) == 0 && d == 1e-3, "parse_double accepts 1e-3");
	tap_ok(parse_double("--lr", "nan", 0, 1, &d) < 0, "parse_double refuses nan");
	static const char *const names[] = { "constant", "linear", "cosine" };
	tap_ok(parse_choice("--schedule", "cosine", names, 3) == 2, "parse_choice finds a name");
	tap_ok(parse_choice("--schedule", "cos", names, 3) < 0, "parse_choice refuses a prefix");
	tap_ok(parse_choice("--schedule", "", names, 3) < 0, "parse_choice refuses empty");
	tap_ok((double)ARG_SEED_MAX == 9007199254740991.0 &&
		       (double)ARG_SEED_MAX + 1 == 9007199254740992.0 &&
		       (long)(double)ARG_SEED_MAX == ARG_SEED_MAX,
	       "ARG_SEED_MAX is 2^53 - 1, exact as a double");

	struct buf b;
	buf_init(&b);
	for (int i = 0; i < 1000; i++)
		buf_printf(&b, "%d,", i);
	tap_ok(b.len == 3890 && memcmp(b.data, "0,1,2,", 6) == 0, "buf_printf grows (len %zu)", b.len);
	buf_release(&b);

	char dir[] = "/tmp/seva-test-util.XXXXXX";
	tap_ok(mkdtemp(dir) != NULL, "mkdtemp");
	char *path = xasprintf("%s/a/b/c", dir);
	tap_ok(mkdir_p(path) == 0, "mkdir_p makes parents");
	char *file = xasprintf("%s/f.txt", path);
	tap_ok(write_file_atomic(file, "hello", 5) == 0, "write_file_atomic");
	size_t n;
	unsigned char *got = read_file(file, &n);
	tap_ok(got && n == 5 && memcmp(got, "hello", 5) == 0, "read back what was written");
	free(got);
	struct stat st;
	tap_ok(write_file_atomic("/dev/null", "x", 1) == 0 && stat("/dev/null", &st) == 0 &&
		       S_ISCHR(st.st_mode),
	       "writing /dev/null leaves it a device");
	unlink(file);
	free(file);
	free(path);
	return tap_done();
}
