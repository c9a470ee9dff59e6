/* util — error reporting, checked allocation, argv numbers, atomic files,
 * progress lines. The bottom of the dependency graph: uses libc only. */
#ifndef SEVA_UTIL_H
#define SEVA_UTIL_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

/* The program name used as the prefix of every message ("seva-cat"). */
extern const char *progname;
void util_init(const char *argv0);
/* util_init, and --version anywhere on the command line (before "--"):
 * "PROGNAME VERSION" on stdout, exit 0, as every tool does. */
void util_init_args(int argc, char **argv);
/* The seva release, from the file VERSION at the top of the tree. */
const char *seva_version(void);

/* Messages go to stderr as "PROGNAME: MESSAGE". A message ending in ':'
 * gets ": strerror(errno)" appended (sbase's convention). */
_Noreturn void die(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void warn(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Prints like warn() and returns -1, so library code can `return error(...)`. */
int error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Exit 2 with "usage: ..." for bad command lines. */
_Noreturn void usage_die(const char *usage);
/* --help: "usage: ..." and every option with its default (the man page's
 * OPTIONS section) on stdout, exit 0 (git's and GNU's convention: asked-for
 * help is output; a usage error gets the synopsis alone on stderr, exit 2). */
_Noreturn void usage_help(const char *usage);
/* A flag that takes no value written as if it took a count ("-t 8": -t is
 * tar output here, threads in llama.cpp), the number naming no file: a
 * usage error that says what the flag does, and, where the tool has a
 * thread count (THREADS), that it is -j. Call before getopt. */
void usage_flag_not_count(int argc, char **argv, char flag, const char *does, int threads,
			  const char *usage);

/* Allocation that dies on failure ("out of memory" is not recoverable here). */
void *xmalloc(size_t n);
void *xcalloc(size_t n, size_t size);
void *xrealloc(void *p, size_t n);
char *xstrdup(const char *s);
char *xstrndup(const char *s, size_t n);
char *xasprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Growable byte buffer; `data` is always NUL-terminated for text use. */
struct buf {
	unsigned char *data;
	size_t len, cap;
};
void buf_init(struct buf *b);
void buf_release(struct buf *b);
void buf_add(struct buf *b, const void *p, size_t n);
void buf_addstr(struct buf *b, const char *s);
void buf_printf(struct buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Hands the bytes to the caller (who frees them) and resets the buffer. */
unsigned char *buf_detach(struct buf *b, size_t *len);

/* Numbers from argv: range-checked, whole string consumed; on failure print
 * "OPTION: not a number in [min, max]: TEXT" and return -1. */
int parse_long(const char *opt, const char *s, long min, long max, long *out);
int parse_double(const char *opt, const char *s, double min, double max, double *out);
/* Shorthands for cmd/: the same checks, exit 2 on failure. */
long arg_long(const char *opt, const char *s, long min, long max);
double arg_double(const char *opt, const char *s, double min, double max);
/* The same over (min, max]: for a value that min itself would make
 * meaningless (a nucleus of probability 0 holds no token). */
double arg_double_above(const char *opt, const char *s, double min, double max);
/* A word from a fixed list: the index of S in NAMES (N of them); on failure
 * "OPTION: not a, b or c: 'S'" and -1 (arg_choice: exit 2). */
int parse_choice(const char *opt, const char *s, const char *const *names, int n);
int arg_choice(const char *opt, const char *s, const char *const *names, int n);
/* A comma-separated list of NAMES (n of them, at most 31) as a mask, bit i
 * for names[i]; an unknown name or an empty list: "OPTION: unknown name
 * 'x' (a, b, c)" and -1 (arg_names: exit 2). */
int parse_names(const char *opt, const char *s, const char *const *names, int n);
unsigned arg_names(const char *opt, const char *s, const char *const *names, int n);
/* A run seed (-s): 0 to 2^53 - 1, so that it survives JSON (whose numbers
 * are doubles) exactly in the records and files that name it. Exit 2. */
#define ARG_SEED_MAX 9007199254740991L
uint64_t arg_seed(const char *opt, const char *s);

/* The exit status of a run that finished but, under -k, passed over
 * samples or inputs: not 0 (something is missing), not 1 (nothing failed),
 * so a script can tell "skipped 3 of 665 000" from broken input. */
#define EXIT_SKIPPED 3
/* The closing words of a run that skipped (-k): "N of M samples skipped"
 * when SKIPPED, "N inputs could not be read" when UNREAD, on stderr even
 * when quiet. Returns 1 if anything was skipped (the exit status says so),
 * else 0. */
int report_skips(long skipped, long read, long unread);

/* Whole file into memory (NUL-terminated). NULL and error printed on failure. */
unsigned char *read_file(const char *path, size_t *len);
/* Creates PATH as a new, empty file for writing (a descriptor, -1 and
 * errno on failure). Whatever already has the name, a leftover of a killed
 * run or a link planted there, is removed first, never followed or
 * truncated: temporary names (PATH.tmp.PID) are easy to guess. */
int create_new(const char *path);
/* An output file written as a stream and published whole: F writes
 * PATH.tmp.PID (create_new; removed at exit or on a signal until then), and
 * out_commit flushes, fsyncs and renames it over PATH, so readers never see
 * half a file. A device or fifo (/dev/null) is written directly, never
 * replaced (TMP is NULL). Both return -1 with a message on failure;
 * out_commit and out_abort free everything either way. */
struct out_file {
	FILE *f;
	char *path; /* as given */
	char *tmp;  /* PATH.tmp.PID, or NULL when written directly */
};
int out_open(struct out_file *o, const char *path);
int out_commit(struct out_file *o);
void out_abort(struct out_file *o);
/* out_commit's two halves, for a tool whose outputs appear all or none:
 * out_finish flushes, fsyncs and closes (the data stays at TMP; on failure
 * the temporary is removed and O freed), out_publish renames it over PATH.
 * out_abort between the two removes the temporary. */
int out_finish(struct out_file *o);
int out_publish(struct out_file *o);
/* DATA as the whole of PATH, by an out_file. */
int write_file_atomic(const char *path, const void *data, size_t len);
/* Makes DIR and its parents (mkdir -p). */
int mkdir_p(const char *dir);
/* Why the relative path REL, taken from untrusted input, could name a file
 * outside the folder it is joined to ("an absolute path", "a '..'
 * component"); NULL when it stays inside (lexically: links in the folder
 * are the folder owner's business). */
const char *path_escapes(const char *rel);
/* Removes PATH and, if it is a directory, everything under it (rm -rf,
 * without following links). -1 with a message on failure. */
int remove_tree(const char *path);

/* Temporary files and directories a program has made and not yet renamed
 * into place: every tracked path is removed at exit (die() included) and,
 * for plain files, when SIGTERM, SIGINT or SIGHUP ends the program (the
 * signal then ends it as before). A program that handles those signals
 * itself keeps its handlers. */
void tmp_track(const char *path);
void tmp_untrack(const char *path);
/* Removes the leftovers of killed runs beside PATH: PATH.tmp.PID (a file
 * or a directory) where PID is no live process on this machine. A file
 * system shared with other machines holds their runs too: only use this
 * for paths that no run elsewhere writes at the same time. Returns how
 * many were removed; names each unless QUIET. */
int tmp_reclaim(const char *path, int quiet);

/* Seconds on a monotonic clock. */
double now_seconds(void);

/* Progress on stderr, redrawn in place, only when stderr is a terminal and
 * not quiet. `what` names the unit ("samples"); extra text is optional.
 * progress_done leaves one summary line: the count, the time, the last
 * extra text (a trainer's loss). */
struct progress {
	const char *what;
	long total; /* 0 if unknown */
	long done;
	double start, last;
	int enabled;
	char extra[128]; /* the last extra text shown */
};
void progress_init(struct progress *p, const char *what, long total, int quiet);
void progress_update(struct progress *p, long done, const char *extra);
void progress_done(struct progress *p);

/* Checks stdout at exit: flush and close errors become "write error" and
 * exit 1 (so `tool > /dev/full` fails). Call once from main. */
void check_stdout_at_exit(void);
/* A write error on stdout has been reported already (by the record writer):
 * the check at exit then ends with status 1 without a second message. */
void stdout_error_reported(void);

#endif
