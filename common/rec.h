/* rec — record streams: read samples from tar shards or msgpack streams
 * (detected from the first bytes; .tar.gz/.tar.zst through libarchive),
 * write msgpack, tar or JSON lines. The only module (with shard.c) that
 * touches msgpack-c and libarchive. */
#ifndef SEVA_REC_H
#define SEVA_REC_H

#include "sample.h"

enum rec_format {
	REC_MSGPACK, /* tarp convention: one map per sample, "__key__" first */
	REC_TAR,     /* WebDataset: members KEY.FIELD, a sample's members adjacent */
	REC_JSONL,   /* for jq: bytes fields as {"bytes": N, "sha256": "..."} */
};

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
/* Abandons a writer: removes its temp file, frees it. */
void rec_writer_abort(struct rec_writer *w);
/* True once the output itself failed (write error, broken tar): no further
 * record can be written. A record refused for its content (a key unfit for
 * tar, invalid JSON text) leaves the writer usable. */
int rec_writer_failed(const struct rec_writer *w);

/* Parses "msgpack"/"tar"/"jsonl" (or "json"). -1 if unknown. */
int rec_format_parse(const char *name);

#endif
