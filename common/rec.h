/* rec — record streams: read samples from tar shards or msgpack streams
 * (detected from the first bytes; .tar.gz/.tar.zst through libarchive),
 * write msgpack, tar or JSON lines; the input loop every tool runs over
 * them (rec_input). The only module that touches msgpack-c and libarchive. */
#ifndef SEVA_REC_H
#define SEVA_REC_H

#include "sample.h"

enum rec_format {
	REC_MSGPACK, /* tarp convention: one map per sample, "__key__" first */
	REC_TAR,     /* WebDataset: members KEY.FIELD, a sample's members adjacent */
	REC_JSONL,   /* for jq: bytes fields as {"bytes": N, "sha256": "..."} */
};

/* What a key may be, since it names files (tar members KEY.FIELD, the
 * images seva-pair exports as KEY.png): 1 to REC_KEY_MAX bytes, none of them
 * '/', '.' or a control character (below 0x20, or 0x7f). Every reader
 * refuses another key as a bad record, every writer refuses to write one.
 * NULL if KEY is fit, else why not (static text). */
#define REC_KEY_MAX 200
const char *rec_key_unfit(const char *key);

struct rec_reader;

/* Opens PATH for reading ("-" or NULL: stdin). The display name is used in
 * every message. Returns NULL (message printed) if it cannot be opened. */
struct rec_reader *rec_open(const char *path);
/* Reads the next sample into S (cleared first).
 * Returns 1: a sample; 0: end of input; -1: bad input, message printed as
 * "NAME: record N (key K): WHAT" (or member name for tar). After -1 a caller
 * with -k may call again: the reader continues if it can resynchronise (the
 * next tar sample) and returns 0 if it cannot (truncated stream). */
int rec_read(struct rec_reader *r, struct sample *s);
/* "FILE: record N (key K)" for the sample last returned; for messages about
 * a sample's content written by the tools. Borrowed, valid until next read. */
const char *rec_where(struct rec_reader *r);
void rec_close(struct rec_reader *r);

struct rec_writer;

/* Writes to PATH ("-" or NULL: stdout). For REC_TAR with a path, the file
 * is written as PATH.tmp.PID and renamed by rec_writer_close() on success.
 * FLAGS: REC_BASE64 (JSONL: bytes fields in base64). Refuses (NULL,
 * message printed) to write msgpack or tar to a terminal. */
#define REC_BASE64 1
struct rec_writer *rec_writer_open(const char *path, enum rec_format fmt, int flags);
/* Writes one whole sample. -1 (message printed) on a write error. */
int rec_write(struct rec_writer *w, const struct sample *s);
/* Finishes the stream (tar trailer), flushes, checks for write errors,
 * renames into place. -1 (message printed, temp removed) on failure. */
int rec_writer_close(struct rec_writer *w);
/* rec_writer_close in two halves, for a tool whose outputs appear all or
 * none: the stream finished, a file output left at its temporary name and
 * handed over in *HELD (zeroed for stdout or a device) for out_publish or
 * out_abort; W freed. -1 (message printed, temp removed) on failure. */
struct out_file;
int rec_writer_finish(struct rec_writer *w, struct out_file *held);
/* What makes S a record W refuses for its content (a key no reader would
 * take back, names tar cannot hold), or NULL: for a tool to refuse the
 * sample in its own words before rec_write (static text, or the thread's
 * buffer until its next call). */
const char *rec_writer_unfit(const struct rec_writer *w, const struct sample *s);
/* Abandons a writer: removes its temp file, frees it. */
void rec_writer_abort(struct rec_writer *w);
/* True once the output itself failed (write error, broken tar): no further
 * record can be written. A record refused for its content (a key unfit for
 * tar, invalid JSON text) leaves the writer usable. */
int rec_writer_failed(const struct rec_writer *w);
/* Ends a tool's output W (NULL: none): abandoned (temp removed) when the
 * run FAILED, else closed. 0: the output is whole; 1: the run failed;
 * 2: the output itself failed and has said so, so the caller leaves with
 * _exit(1) and stdio's check at exit does not say it again. */
int rec_writer_end(struct rec_writer *w, int failed);

/* The keys of a stream so far, each with where it was first seen: a hash
 * set of 128-bit hashes (32 bytes a slot, whatever the keys' lengths).
 * Zeroed by rec_keys_init; rec_keys_release frees it. */
struct rec_key_seen;
struct rec_keys {
	struct rec_key_seen *slot;
	size_t cap, n;
};
void rec_keys_init(struct rec_keys *k);
void rec_keys_release(struct rec_keys *k);
/* Adds KEY, seen in input FILE at record REC: 0 if it is new; 1 if it was
 * seen before, where it was in *WAS_FILE and *WAS_REC. */
int rec_keys_add(struct rec_keys *k, const char *key, int file, long rec, int *was_file,
		 long *was_rec);

/* The inputs of a tool (DESIGN sec. 7): FILES in order (none: standard
 * input; "-" is standard input too), each opened in turn. An input that
 * cannot be opened, a record that cannot be read, and a record whose key
 * an earlier record of any input had, are, with KEEP, counted and passed
 * over ("WHERE: WHY (skipped)"); without, they end the loop ("WHERE: WHY").
 * The tool refuses a sample it cannot use with rec_input_refuse, under the
 * same rule. rec_input_release prints the closing count. */
struct rec_input {
	char *const *files;
	int nfiles, keep;
	int next, cur;             /* the input to open next; the one being read */
	struct rec_reader *r;      /* NULL between inputs */
	long read, skipped, unread; /* records read (good or bad); skipped (read
				      or refused); inputs not opened */
	int failed;                /* the loop ended on a bad input */
	struct rec_keys keys;
};
void rec_input_init(struct rec_input *in, char *const *files, int n, int keep);
/* The next sample of any input into S: 1; 0 after the last input; -1 when a
 * bad input or record ends the run (message printed). */
int rec_input_next(struct rec_input *in, struct sample *s);
/* "FILE: record N (key K)" of the sample last returned (borrowed, valid
 * until the next call). */
const char *rec_input_where(const struct rec_input *in);
/* The tool refuses the sample last returned, for WHY: with KEEP warns
 * "WHERE: WHY (skipped)", counts it and returns 0; else prints "WHERE: WHY",
 * ends the loop and returns -1. WHY NULL: the reason was printed already
 * (a writer's refusal). _at: for a sample returned earlier (a batch), at
 * WHERE as rec_input_where said then. */
int rec_input_refuse(struct rec_input *in, const char *why);
int rec_input_refuse_at(struct rec_input *in, const char *where, const char *why);
/* The whole loop, for tools that read everything first: every sample to
 * ADD, which may take its contents (and sample_init it); ADD's -1 (a reason
 * in *WHY) is rec_input_refuse's. 0 at the end, -1 if the run ends. */
int rec_input_each(struct rec_input *in, int (*add)(void *ctx, struct sample *s, const char **why),
		   void *ctx);
/* Closes the inputs; with KEEP prints "N of M samples skipped" and "N
 * inputs could not be read" when so. Returns 1 if the loop failed,
 * EXIT_SKIPPED (util.h) if it finished but skipped something, else 0: the
 * tool's exit status unless something else failed. Call once. */
int rec_input_release(struct rec_input *in);

/* Parses "msgpack"/"tar"/"jsonl" (or "json"). -1 if unknown. */
int rec_format_parse(const char *name);

/* LEN bytes of STR as a JSON string (quotes, escapes, control bytes and NUL
 * as \u00XX) appended to B: the one quoting of the JSON lines writer. */
struct buf;
void rec_json_quote(struct buf *b, const void *str, size_t len);

#endif
