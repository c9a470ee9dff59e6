/* safetensors — the Hugging Face tensor file format: an 8-byte little-endian
 * header length, a JSON header {name: {"dtype", "shape", "data_offsets"}},
 * then the raw data. Files are mmap'd read-only and validated whole on open
 * (offsets inside the file, sizes matching dtype x shape) so that readers
 * never touch bytes outside the map. A model may be one file or shards named
 * by DIR/PREFIX.safetensors.index.json {"weight_map": {name: file}}.
 * Writing is atomic (PATH.tmp.PID, fsync, rename). Uses util and cJSON. */
#ifndef SEVA_SAFETENSORS_H
#define SEVA_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#define SAFETENSORS_MAX_DIMS 8

enum safetensors_dtype {
	ST_F32, ST_F16, ST_BF16, ST_F64,
	ST_OTHER, /* any other dtype the format knows (I64, U8, BOOL ...): kept, not converted */
};

struct safetensors_tensor {
	char *name;
	enum safetensors_dtype dtype;
	char dtype_name[16];             /* as written in the header */
	int ndim;
	long shape[SAFETENSORS_MAX_DIMS];
	long numel;
	const unsigned char *data;       /* inside the map of FILE */
	size_t nbytes;
	const char *file;                /* display name of the file it lives in */
};

/* A set of tensors from one file or several shards, sorted by name. */
struct safetensors {
	struct safetensors_tensor *tensors;
	int ntensors;
	/* the maps, one per file */
	int nfiles;
	void **maps;
	size_t *map_sizes;
	char **paths;
};

/* Opens one file. -1 with a message naming the file (and tensor) when the
 * file is malformed; nothing to release then. */
int safetensors_open(struct safetensors *st, const char *path);
/* Opens DIR/PREFIX.safetensors.index.json and its shards if the index
 * exists, else DIR/PREFIX.safetensors. A name in two files is an error. */
int safetensors_open_dir(struct safetensors *st, const char *dir, const char *prefix);
/* Unmaps everything; the tensors' data pointers die with it. */
void safetensors_release(struct safetensors *st);

/* The tensor called NAME, or NULL. */
const struct safetensors_tensor *safetensors_find(const struct safetensors *st, const char *name);

/* Converts T (F32, F16, BF16 or F64) into OUT (T->numel floats) after
 * checking its shape equals SHAPE (NDIM dims; NULL skips the check).
 * -1 with "FILE: tensor 'NAME': ..." on a mismatch or unsupported dtype. */
int safetensors_read_f32(const struct safetensors_tensor *t, float *out, const long *shape,
			 int ndim);

/* One tensor to write: float data converted to the file's dtype. */
struct safetensors_entry {
	const char *name;
	const float *data;
	int ndim;
	const long *shape;
};
/* Writes N entries to PATH in DTYPE ("F32", "F16" or "BF16"), atomically,
 * with __metadata__ {"format": "pt"}. -1 with a message on failure (PATH
 * untouched). */
int safetensors_write(const char *path, const struct safetensors_entry *e, int n,
		      const char *dtype);

#endif
