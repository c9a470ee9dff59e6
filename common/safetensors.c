#include "safetensors.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tensor.h"
#include "util.h"

/* The spec caps the header at 100 MB; a larger claim is a corrupt file. */
#define HEADER_MAX (100L * 1000 * 1000)
/* No real dimension comes near this; it keeps numel * itemsize from overflowing. */
#define DIM_MAX (1L << 40)

static const struct {
	const char *name;
	enum safetensors_dtype dtype;
	int size;
} dtypes[] = {
	{"F32", ST_F32, 4}, {"F16", ST_F16, 2}, {"BF16", ST_BF16, 2}, {"F64", ST_F64, 8},
	{"I64", ST_OTHER, 8}, {"U64", ST_OTHER, 8}, {"I32", ST_OTHER, 4}, {"U32", ST_OTHER, 4},
	{"I16", ST_OTHER, 2}, {"U16", ST_OTHER, 2}, {"I8", ST_OTHER, 1}, {"U8", ST_OTHER, 1},
	{"BOOL", ST_OTHER, 1}, {"F8_E4M3", ST_OTHER, 1}, {"F8_E5M2", ST_OTHER, 1},
};

static int dtype_lookup(const char *name, enum safetensors_dtype *dt)
{
	for (size_t i = 0; i < ARRAY_LEN(dtypes); i++)
		if (!strcmp(dtypes[i].name, name)) {
			*dt = dtypes[i].dtype;
			return dtypes[i].size;
		}
	return -1;
}

/* A JSON number that is a non-negative integer no larger than MAX. */
static int json_count(const cJSON *j, double max, long *out)
{
	if (!cJSON_IsNumber(j))
		return -1;
	double d = j->valuedouble;
	if (!(d >= 0 && d <= max) || d != floor(d))
		return -1;
	*out = (long)d;
	return 0;
}

static void add_map(struct safetensors *st, void *map, size_t size, const char *path)
{
	st->maps = xrealloc(st->maps, (st->nfiles + 1) * sizeof *st->maps);
	st->map_sizes = xrealloc(st->map_sizes, (st->nfiles + 1) * sizeof *st->map_sizes);
	st->paths = xrealloc(st->paths, (st->nfiles + 1) * sizeof *st->paths);
	st->maps[st->nfiles] = map;
	st->map_sizes[st->nfiles] = size;
	st->paths[st->nfiles] = xstrdup(path);
	st->nfiles++;
}

/* Parses one header entry into T; -1 with a message. */
static int parse_entry(struct safetensors_tensor *t, const cJSON *e, const char *path,
		       const unsigned char *data, size_t dsize)
{
	const char *name = e->string;
	const cJSON *dt = cJSON_GetObjectItemCaseSensitive(e, "dtype");
	const cJSON *shape = cJSON_GetObjectItemCaseSensitive(e, "shape");
	const cJSON *offs = cJSON_GetObjectItemCaseSensitive(e, "data_offsets");
	long begin, end;
	int size;

	if (!cJSON_IsObject(e))
		return error("%s: tensor '%s': header entry is not an object", path, name);
	if (!cJSON_IsString(dt) || strlen(dt->valuestring) >= sizeof t->dtype_name)
		return error("%s: tensor '%s': missing or bad \"dtype\"", path, name);
	if ((size = dtype_lookup(dt->valuestring, &t->dtype)) < 0)
		return error("%s: tensor '%s': unknown dtype '%s'", path, name, dt->valuestring);
	strcpy(t->dtype_name, dt->valuestring);
	if (!cJSON_IsArray(shape) || cJSON_GetArraySize(shape) > SAFETENSORS_MAX_DIMS)
		return error("%s: tensor '%s': \"shape\" is not an array of at most %d sizes", path,
			     name, SAFETENSORS_MAX_DIMS);
	t->ndim = 0;
	t->numel = 1;
	const cJSON *d;
	cJSON_ArrayForEach(d, shape) {
		long n;
		if (json_count(d, (double)DIM_MAX, &n))
			return error("%s: tensor '%s': bad size in \"shape\"", path, name);
		t->shape[t->ndim++] = n;
		if (n && t->numel > DIM_MAX / n)
			return error("%s: tensor '%s': shape too large", path, name);
		t->numel *= n;
	}
	if (!cJSON_IsArray(offs) || cJSON_GetArraySize(offs) != 2 ||
	    json_count(cJSON_GetArrayItem(offs, 0), (double)dsize, &begin) ||
	    json_count(cJSON_GetArrayItem(offs, 1), (double)dsize, &end) || begin > end)
		return error("%s: tensor '%s': \"data_offsets\" outside the data (%zu bytes)", path,
			     name, dsize);
	if ((unsigned long)(end - begin) != (unsigned long)t->numel * (unsigned long)size)
		return error("%s: tensor '%s': %ld bytes of data for %ld %s values (want %ld)", path,
			     name, end - begin, t->numel, t->dtype_name, t->numel * size);
	t->name = xstrdup(name);
	t->data = data + begin;
	t->nbytes = (size_t)(end - begin);
	return 0;
}

static int by_offset(const void *a, const void *b)
{
	const struct safetensors_tensor *x = *(const struct safetensors_tensor *const *)a;
	const struct safetensors_tensor *y = *(const struct safetensors_tensor *const *)b;
	if (x->data != y->data)
		return x->data < y->data ? -1 : 1;
	return x->nbytes < y->nbytes ? -1 : x->nbytes > y->nbytes;
}

/* The safetensors library's rule: in offset order, each tensor starts
 * where the one before ended, the first at 0, and the last ends with the
 * file. Overlapping tensors (all at offset 0 would load as one) and bytes
 * that belong to none are refused. T holds this file's N tensors. */
static int check_layout(struct safetensors_tensor *t, int n, const unsigned char *data,
			size_t dsize, const char *path)
{
	struct safetensors_tensor **v = xmalloc((size_t)(n + 1) * sizeof *v);
	size_t at = 0;
	int rc = 0;
	for (int i = 0; i < n; i++)
		v[i] = &t[i];
	qsort(v, (size_t)n, sizeof *v, by_offset);
	for (int i = 0; i < n && !rc; i++) {
		size_t begin = (size_t)(v[i]->data - data);
		if (begin != at)
			rc = error("%s: tensor '%s': data_offsets [%zu, %zu] %s (the data must be "
				   "tensors end to end)", path, v[i]->name, begin, begin + v[i]->nbytes,
				   begin < at ? "overlap the tensor before" : "leave a gap before it");
		at = begin + v[i]->nbytes;
	}
	if (!rc && at != dsize)
		rc = error("%s: %zu bytes of data after the last tensor", path, dsize - at);
	free(v);
	return rc;
}

/* Maps PATH and appends its tensors to ST (unsorted). */
static int open_one(struct safetensors *st, const char *path)
{
	struct stat sb;
	unsigned char *map;
	uint64_t hlen = 0;
	int fd = open(path, O_RDONLY);

	if (fd < 0)
		return error("open '%s':", path);
	if (fstat(fd, &sb) < 0) {
		close(fd);
		return error("stat '%s':", path);
	}
	if (sb.st_size < 8) {
		close(fd);
		return error("%s: not a safetensors file (%ld bytes)", path, (long)sb.st_size);
	}
	map = mmap(NULL, (size_t)sb.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
	close(fd);
	if (map == MAP_FAILED)
		return error("mmap '%s':", path);
	size_t size = (size_t)sb.st_size;
	/* read once, front to back (advice values are not flags: one call each) */
	madvise(map, size, MADV_SEQUENTIAL);
	madvise(map, size, MADV_WILLNEED);
	add_map(st, map, size, path);
	const char *disp = st->paths[st->nfiles - 1];

	/* a clone without git-lfs leaves pointer files where the weights belong */
	static const char lfs[] = "version https://git-lfs";
	if (size >= sizeof lfs - 1 && !memcmp(map, lfs, sizeof lfs - 1))
		return error("%s: a Git LFS pointer, not the tensors: fetch the file (git lfs pull)",
			     path);
	for (int i = 7; i >= 0; i--)
		hlen = hlen << 8 | map[i];
	if (hlen > HEADER_MAX || hlen > size - 8)
		return error("%s: header length %llu exceeds the file (%zu bytes)", path,
			     (unsigned long long)hlen, size);
	cJSON *h = cJSON_ParseWithLength((const char *)map + 8, (size_t)hlen);
	if (!cJSON_IsObject(h)) {
		cJSON_Delete(h);
		return error("%s: header is not a JSON object", path);
	}
	const unsigned char *data = map + 8 + hlen;
	size_t dsize = size - 8 - (size_t)hlen;
	const cJSON *e;
	int n = cJSON_GetArraySize(h), first = st->ntensors;
	st->tensors = xrealloc(st->tensors, (st->ntensors + n) * sizeof *st->tensors);
	cJSON_ArrayForEach(e, h) {
		if (!strcmp(e->string, "__metadata__"))
			continue;
		struct safetensors_tensor *t = &st->tensors[st->ntensors];
		memset(t, 0, sizeof *t);
		if (parse_entry(t, e, path, data, dsize)) {
			cJSON_Delete(h);
			return -1;
		}
		t->file = disp;
		st->ntensors++;
	}
	cJSON_Delete(h);
	return check_layout(st->tensors + first, st->ntensors - first, data, dsize, path);
}

static int cmp_tensor(const void *a, const void *b)
{
	return strcmp(((const struct safetensors_tensor *)a)->name,
		      ((const struct safetensors_tensor *)b)->name);
}

static int finish(struct safetensors *st)
{
	qsort(st->tensors, st->ntensors, sizeof *st->tensors, cmp_tensor);
	for (int i = 1; i < st->ntensors; i++)
		if (!strcmp(st->tensors[i - 1].name, st->tensors[i].name))
			return error("%s: tensor '%s' also in %s", st->tensors[i].file,
				     st->tensors[i].name, st->tensors[i - 1].file);
	return 0;
}

int safetensors_open(struct safetensors *st, const char *path)
{
	memset(st, 0, sizeof *st);
	if (open_one(st, path) || finish(st)) {
		safetensors_release(st);
		return -1;
	}
	return 0;
}

/* Shards named by the index: each file opened once; every name the index
 * lists must be in the file it names. */
static int open_index(struct safetensors *st, const char *dir, const char *ipath)
{
	unsigned char *text = read_file(ipath, NULL);
	cJSON *j = text ? cJSON_Parse((const char *)text) : NULL;
	const cJSON *wm = cJSON_GetObjectItemCaseSensitive(j, "weight_map");
	const cJSON *e;
	int ret = -1;

	free(text);
	if (!text)
		return -1;
	if (!cJSON_IsObject(wm)) {
		error("%s: no \"weight_map\" object", ipath);
		goto out;
	}
	cJSON_ArrayForEach(e, wm) {
		if (!cJSON_IsString(e) || !*e->valuestring || strchr(e->valuestring, '/')) {
			error("%s: weight_map: '%s': not a file name in %s", ipath, e->string, dir);
			goto out;
		}
		char *path = xasprintf("%s/%s", dir, e->valuestring);
		int seen = 0;
		for (int i = 0; i < st->nfiles && !seen; i++)
			seen = !strcmp(st->paths[i], path);
		int r = seen ? 0 : open_one(st, path);
		free(path);
		if (r)
			goto out;
	}
	if (finish(st))
		goto out;
	cJSON_ArrayForEach(e, wm) {
		const struct safetensors_tensor *t = safetensors_find(st, e->string);
		const char *base = t ? strrchr(t->file, '/') : NULL;
		if (!t || strcmp(base ? base + 1 : t->file, e->valuestring)) {
			error("%s: weight_map: tensor '%s' is not in %s", ipath, e->string,
			      e->valuestring);
			goto out;
		}
	}
	ret = 0;
out:
	cJSON_Delete(j);
	return ret;
}

int safetensors_open_dir(struct safetensors *st, const char *dir, const char *prefix)
{
	char *ipath = xasprintf("%s/%s.safetensors.index.json", dir, prefix);
	int ret;

	memset(st, 0, sizeof *st);
	if (access(ipath, F_OK) == 0) {
		ret = open_index(st, dir, ipath);
	} else {
		char *path = xasprintf("%s/%s.safetensors", dir, prefix);
		ret = open_one(st, path);
		if (!ret)
			ret = finish(st);
		free(path);
	}
	free(ipath);
	if (ret)
		safetensors_release(st);
	return ret;
}

void safetensors_release(struct safetensors *st)
{
	for (int i = 0; i < st->ntensors; i++)
		free(st->tensors[i].name);
	for (int i = 0; i < st->nfiles; i++) {
		munmap(st->maps[i], st->map_sizes[i]);
		free(st->paths[i]);
	}
	free(st->tensors);
	free(st->maps);
	free(st->map_sizes);
	free(st->paths);
	memset(st, 0, sizeof *st);
}

const struct safetensors_tensor *safetensors_find(const struct safetensors *st, const char *name)
{
	int lo = 0, hi = st->ntensors - 1;
	while (lo <= hi) {
		int mid = lo + (hi - lo) / 2;
		int c = strcmp(name, st->tensors[mid].name);
		if (!c)
			return &st->tensors[mid];
		if (c < 0)
			hi = mid - 1;
		else
			lo = mid + 1;
	}
	return NULL;
}

static void shape_str(char *s, size_t n, const long *shape, int ndim)
{
	size_t k = (size_t)snprintf(s, n, "(");
	for (int i = 0; i < ndim && k < n; i++)
		k += (size_t)snprintf(s + k, n - k, i ? ", %ld" : "%ld", shape[i]);
	if (k < n)
		snprintf(s + k, n - k, ")");
}

int safetensors_read_f32(const struct safetensors_tensor *t, float *out, const long *shape,
			 int ndim)
{
	if (shape) {
		int same = t->ndim == ndim;
		for (int i = 0; same && i < ndim; i++)
			same = t->shape[i] == shape[i];
		if (!same) {
			char got[160], want[160];
			shape_str(got, sizeof got, t->shape, t->ndim);
			shape_str(want, sizeof want, shape, ndim);
			return error("%s: tensor '%s': shape %s, want %s", t->file, t->name, got,
				     want);
		}
	}
	/* memcpy per element: the data of a safetensors file need not be aligned. */
	const unsigned char *p = t->data;
	switch (t->dtype) {
	case ST_F32:
		memcpy(out, p, (size_t)t->numel * 4);
		break;
	case ST_F64:
		for (long i = 0; i < t->numel; i++) {
			double d;
			memcpy(&d, p + 8 * i, 8);
			out[i] = (float)d;
		}
		break;
	case ST_F16:
	case ST_BF16:
		/* a 7B checkpoint is 7e9 of these: use every core */
#pragma omp parallel for if (t->numel > 65536) schedule(static)
		for (long i = 0; i < t->numel; i++) {
			uint16_t h;
			memcpy(&h, p + 2 * i, 2);
			out[i] = t->dtype == ST_F16 ? f16_to_f32(h) : bf16_to_f32(h);
		}
		break;
	default:
		return error("%s: tensor '%s': dtype %s cannot be read as floats", t->file, t->name,
			     t->dtype_name);
	}
	return 0;
}

static int write_all(FILE *f, const void *p, size_t n)
{
	return fwrite(p, 1, n, f) == n ? 0 : -1;
}

int safetensors_write(const char *path, const struct safetensors_entry *e, int n,
		      const char *dtype)
{
	enum safetensors_dtype dt;
	int isz = dtype_lookup(dtype, &dt);
	if (isz < 0 || dt == ST_OTHER || dt == ST_F64)
		return error("%s: cannot write dtype '%s' (F32, F16 or BF16)", path, dtype);

	cJSON *h = cJSON_CreateObject();
	cJSON *meta = cJSON_AddObjectToObject(h, "__metadata__");
	cJSON_AddStringToObject(meta, "format", "pt");
	double off = 0;
	for (int i = 0; i < n; i++) {
		cJSON *t = cJSON_AddObjectToObject(h, e[i].name);
		double numel = 1;
		cJSON *shape = cJSON_AddArrayToObject(t, "shape");
		cJSON *offs = cJSON_AddArrayToObject(t, "data_offsets");
		cJSON_AddStringToObject(t, "dtype", dtype);
		for (int d = 0; d < e[i].ndim; d++) {
			cJSON_AddItemToArray(shape, cJSON_CreateNumber((double)e[i].shape[d]));
			numel *= (double)e[i].shape[d];
		}
		cJSON_AddItemToArray(offs, cJSON_CreateNumber(off));
		off += numel * isz;
		cJSON_AddItemToArray(offs, cJSON_CreateNumber(off));
	}
	char *json = cJSON_PrintUnformatted(h);
	cJSON_Delete(h);
	size_t hlen = strlen(json);
	size_t padded = (hlen + 7) / 8 * 8; /* data starts 8-aligned, as the reference writer does */
	unsigned char lenbytes[8];
	for (int i = 0; i < 8; i++)
		lenbytes[i] = (unsigned char)((uint64_t)padded >> (8 * i));

	struct out_file o;
	int ret = -1;
	if (out_open(&o, path) < 0)
		goto out;
	FILE *f = o.f;
	int bad = write_all(f, lenbytes, 8) || write_all(f, json, hlen) ||
		  write_all(f, "        ", padded - hlen);
	enum { CHUNK = 8192 };
	unsigned char chunk[CHUNK * 4];
	for (int i = 0; i < n && !bad; i++) {
		long numel = 1;
		for (int d = 0; d < e[i].ndim; d++)
			numel *= e[i].shape[d];
		for (long s = 0; s < numel && !bad; s += CHUNK) {
			long m = numel - s < CHUNK ? numel - s : CHUNK;
			const float *x = e[i].data + s;
			if (dt == ST_F32) {
				memcpy(chunk, x, (size_t)m * 4);
			} else {
				for (long k = 0; k < m; k++) {
					uint16_t v = dt == ST_F16 ? f32_to_f16(x[k]) : f32_to_bf16(x[k]);
					memcpy(chunk + 2 * k, &v, 2);
				}
			}
			bad = write_all(f, chunk, (size_t)m * isz);
		}
	}
	if (bad) {
		error("write '%s':", o.tmp ? o.tmp : path);
		out_abort(&o);
		goto out;
	}
	ret = out_commit(&o);
out:
	free(json);
	return ret;
}
