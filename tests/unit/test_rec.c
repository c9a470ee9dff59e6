/* test_rec — sample operations, the three record encodings, JSON <-> msgpack
 * conversion, tar grouping, truncation errors, sha256 vectors. */
#include <math.h>
#include <msgpack.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "rec.h"
#include "sha256.h"
#include "tap.h"
#include "util.h"

static char dir[] = "/tmp/test_rec.XXXXXX";

static char *tmp_path(const char *name)
{
	return xasprintf("%s/%s", dir, name);
}

/* Writes N samples to PATH in FMT; returns 0 on success. */
static int write_all(const char *path, enum rec_format fmt, int flags, struct sample *s, int n)
{
	struct rec_writer *w = rec_writer_open(path, fmt, flags);
	if (!w)
		return -1;
	for (int i = 0; i < n; i++)
		if (rec_write(w, &s[i])) {
			rec_writer_abort(w);
			return -1;
		}
	return rec_writer_close(w);
}

/* Compares two samples; prints the first difference. */
static int same_sample(const struct sample *a, const struct sample *b, const char *what)
{
	if (strcmp(a->key, b->key) || a->nfields != b->nfields) {
		tap_ok(0, "%s", what);
		tap_diag("key '%s' vs '%s', %zu vs %zu fields", a->key, b->key, a->nfields, b->nfields);
		return 0;
	}
	for (size_t i = 0; i < a->nfields; i++) {
		const struct field *f = &a->fields[i], *g = &b->fields[i];
		if (strcmp(f->name, g->name) || f->type != g->type || f->len != g->len ||
		    memcmp(f->data, g->data, f->len)) {
			tap_ok(0, "%s", what);
			tap_diag("field %zu: '%s' type %d len %zu vs '%s' type %d len %zu", i, f->name,
				 f->type, f->len, g->name, g->type, g->len);
			if (f->len < 200 && g->len < 200)
				tap_diag("'%s' vs '%s'", (char *)f->data, (char *)g->data);
			return 0;
		}
	}
	return tap_ok(1, "%s", what);
}

static void test_sample_ops(void)
{
	struct sample s;
	sample_init(&s);
	sample_set_key(&s, "k1");
	sample_set_text(&s, "a.txt", "one");
	sample_set(&s, "jpg", FIELD_BYTES, "\0\1\2", 3);
	sample_set_text(&s, "b.txt", "two");
	sample_set_text(&s, "a.txt", "uno");
	tap_ok(s.nfields == 3 && !strcmp(s.fields[0].name, "a.txt") && !strcmp(sample_text(&s, "a.txt"), "uno"),
	       "replacing a field keeps its position");
	tap_ok(sample_get(&s, "jpg")->len == 3 && sample_get(&s, "jpg")->data[3] == 0,
	       "bytes field keeps length and is NUL-terminated");
	tap_ok(sample_remove(&s, "jpg") == 1 && sample_remove(&s, "jpg") == 0 && s.nfields == 2 &&
		       !strcmp(s.fields[1].name, "b.txt"),
	       "remove drops one field and keeps the order");
	tap_ok(field_type_for("json") == FIELD_JSON && field_type_for("aug.json") == FIELD_JSON &&
		       field_type_for("chosen.txt") == FIELD_TEXT && field_type_for("png") == FIELD_BYTES,
	       "field_type_for by name");
	tap_ok(field_is_image("jpg") && field_is_image("aug.PNG") && !field_is_image("json") &&
		       !field_is_image("webp"),
	       "field_is_image");
	sample_set(&s, "aug.png", FIELD_BYTES, "x", 1);
	tap_ok(sample_image(&s) == NULL, "aug.png is not the clean image");
	sample_set(&s, "jpeg", FIELD_BYTES, "y", 1);
	tap_ok(sample_image(&s) && !strcmp(sample_image(&s)->name, "jpeg"), "sample_image finds jpeg");
	sample_clear(&s);
	tap_ok(s.nfields == 0 && s.key == NULL, "clear empties the sample");
	sample_release(&s);
}

static void make_samples(struct sample *s, int n, size_t big)
{
	for (int i = 0; i < n; i++) {
		char key[16], text[64];
		sample_init(&s[i]);
		snprintf(key, sizeof key, "%06d", i);
		sample_set_key(&s[i], key);
		size_t len = i == 0 ? big : (size_t)(10 + i);
		unsigned char *img = xmalloc(len + 1);
		for (size_t j = 0; j < len; j++)
			img[j] = (unsigned char)(j * 2654435761u >> 13);
		sample_take(&s[i], "jpg", FIELD_BYTES, img, len);
		snprintf(text, sizeof text, "answer %d with \"quotes\"\n\tand é", i);
		sample_set_text(&s[i], "response.txt", text);
		const char *json = "{\"prompt\":\"Is there a red circle?\",\"n\":3,\"big\":18446744073709551615,"
				   "\"neg\":-9223372036854775808,\"f\":0.1,\"g\":1e+300,\"h\":2.0,\"l\":[1,[],{}],"
				   "\"t\":true,\"z\":null,\"u\":\"\\u0001x\"}";
		sample_set(&s[i], "json", FIELD_JSON, json, strlen(json));
	}
}

static void test_roundtrip(enum rec_format fmt, int flags, const char *what)
{
	enum { N = 3 };
	struct sample in[N], out;
	char *path = tmp_path("rt");
	make_samples(in, N, fmt == REC_JSONL ? 300000 : 5 << 20);
	tap_ok(write_all(path, fmt, flags, in, N) == 0, "%s: write", what);
	struct rec_reader *r = rec_open(path);
	sample_init(&out);
	int i = 0, rc;
	while (r && (rc = rec_read(r, &out)) == 1 && i < N) {
		char name[80];
		snprintf(name, sizeof name, "%s: sample %d reads back the same", what, i);
		same_sample(&in[i++], &out, name);
	}
	tap_ok(i == N && r && rec_read(r, &out) == 0, "%s: %d samples then end", what, N);
	rec_close(r);
	sample_release(&out);
	for (i = 0; i < N; i++)
		sample_release(&in[i]);
	unlink(path);
	free(path);
}

/* The msgpack bytes of a JSON field: types as the contract says. */
static void test_json_types(void)
{
	struct sample s;
	char *path = tmp_path("types.mp");
	const char *json = "{\"i\":3,\"u\":18446744073709551615,\"n\":-4,\"f\":2.5,\"e\":1e3,\"s\":\"\\u00e9\","
			   "\"a\":[true,null],\"k\":{\"z\":1,\"a\":2}}";
	sample_init(&s);
	sample_set_key(&s, "t");
	sample_set(&s, "json", FIELD_JSON, json, strlen(json));
	write_all(path, REC_MSGPACK, 0, &s, 1);
	size_t len;
	unsigned char *data = read_file(path, &len);
	msgpack_unpacked up;
	msgpack_unpacked_init(&up);
	int ok = data && msgpack_unpack_next(&up, (const char *)data, len, NULL) == MSGPACK_UNPACK_SUCCESS;
	tap_ok(ok && up.data.type == MSGPACK_OBJECT_MAP && up.data.via.map.size == 2, "record is a map of 2");
	if (ok && up.data.via.map.size == 2) {
		msgpack_object_kv *kv = up.data.via.map.ptr;
		tap_ok(kv[0].key.via.str.size == 7 && !memcmp(kv[0].key.via.str.ptr, "__key__", 7),
		       "__key__ comes first");
		msgpack_object *m = &kv[1].val;
		tap_ok(m->type == MSGPACK_OBJECT_MAP && m->via.map.size == 8, "json field is a map of 8");
		if (m->type == MSGPACK_OBJECT_MAP && m->via.map.size == 8) {
			msgpack_object_kv *f = m->via.map.ptr;
			tap_ok(f[0].val.type == MSGPACK_OBJECT_POSITIVE_INTEGER && f[0].val.via.u64 == 3, "int stays int");
			tap_ok(f[1].val.type == MSGPACK_OBJECT_POSITIVE_INTEGER && f[1].val.via.u64 == UINT64_MAX,
			       "uint64 max exact");
			tap_ok(f[2].val.type == MSGPACK_OBJECT_NEGATIVE_INTEGER && f[2].val.via.i64 == -4, "negative int");
			tap_ok(f[3].val.type == MSGPACK_OBJECT_FLOAT64 && f[3].val.via.f64 == 2.5, "float is float64");
			tap_ok(f[4].val.type == MSGPACK_OBJECT_FLOAT64 && f[4].val.via.f64 == 1000, "1e3 is a float");
			tap_ok(f[5].val.type == MSGPACK_OBJECT_STR && f[5].val.via.str.size == 2 &&
				       !memcmp(f[5].val.via.str.ptr, "\xc3\xa9", 2),
			       "\\u00e9 decodes to UTF-8");
			tap_ok(f[7].val.type == MSGPACK_OBJECT_MAP && f[7].val.via.map.ptr[0].key.via.str.ptr[0] == 'z',
			       "key order kept");
		}
	}
	msgpack_unpacked_destroy(&up);
	free(data);
	/* and back to text: compact, escapes resolved */
	struct rec_reader *r = rec_open(path);
	struct sample back;
	sample_init(&back);
	int rc = r ? rec_read(r, &back) : -1;
	const char *want = "{\"i\":3,\"u\":18446744073709551615,\"n\":-4,\"f\":2.5,\"e\":1000.0,\"s\":\"\xc3\xa9\","
			   "\"a\":[true,null],\"k\":{\"z\":1,\"a\":2}}";
	const char *got = rc == 1 && sample_get(&back, "json") ? (char *)sample_get(&back, "json")->data : "";
	if (!tap_ok(!strcmp(got, want), "msgpack map back to compact JSON text"))
		tap_diag("got  %s\n# want %s", got, want);
	rec_close(r);
	sample_release(&back);
	sample_release(&s);

	/* invalid JSON text is refused and nothing is written */
	sample_init(&s);
	sample_set_key(&s, "bad");
	sample_set(&s, "json", FIELD_JSON, "{\"a\":", 5);
	struct rec_writer *w = rec_writer_open(path, REC_MSGPACK, 0);
	tap_ok(rec_write(w, &s) == -1 && !rec_writer_failed(w), "invalid JSON field refused, writer usable");
	rec_writer_close(w);
	data = read_file(path, &len);
	tap_ok(data && len == 0, "nothing of the refused record written (%zu bytes)", len);
	free(data);
	sample_release(&s);
	unlink(path);
	free(path);
}

static void test_tar_grouping(void)
{
	struct sample s[3], out;
	char *path = tmp_path("g.tar");
	for (int i = 0; i < 3; i++) {
		sample_init(&s[i]);
		sample_set_key(&s[i], i == 2 ? "a" : i == 1 ? "b" : "a");
		sample_set_text(&s[i], i == 2 ? "y.txt" : "x.txt", "v");
	}
	write_all(path, REC_TAR, 0, s, 3);
	struct rec_reader *r = rec_open(path);
	sample_init(&out);
	int r1 = rec_read(r, &out), r2 = rec_read(r, &out), r3 = rec_read(r, &out), r4 = rec_read(r, &out);
	tap_ok(r1 == 1 && r2 == 1 && r3 == -1 && r4 == 0, "a key reappearing after another is an error (%d %d %d %d)",
	       r1, r2, r3, r4);
	rec_close(r);

	/* keys with a dot cannot be tar keys */
	sample_set_key(&s[0], "a.b");
	struct rec_writer *w = rec_writer_open(path, REC_TAR, 0);
	tap_ok(rec_write(w, &s[0]) == -1 && !rec_writer_failed(w), "key with '.' refused for tar");
	rec_writer_close(w);
	for (int i = 0; i < 3; i++)
		sample_release(&s[i]);
	sample_release(&out);
	unlink(path);
	free(path);
}

static void test_truncated(enum rec_format fmt, const char *what)
{
	struct sample s[2], out;
	char *path = tmp_path("tr");
	make_samples(s, 2, 5000);
	write_all(path, fmt, 0, s, 2);
	size_t len;
	unsigned char *data = read_file(path, &len);
	/* cut inside the second sample */
	size_t cut = fmt == REC_TAR ? len - 1024 - 300 : len - 40;
	write_file_atomic(path, data, cut);
	struct rec_reader *r = rec_open(path);
	sample_init(&out);
	int r1 = rec_read(r, &out), r2 = rec_read(r, &out), r3 = rec_read(r, &out);
	tap_ok(r1 == 1 && r2 == -1 && r3 == 0, "%s truncated: 1 sample, an error, then end (%d %d %d)", what, r1,
	       r2, r3);
	rec_close(r);
	free(data);
	for (int i = 0; i < 2; i++)
		sample_release(&s[i]);
	sample_release(&out);
	unlink(path);
	free(path);
}

/* A program that exits (die() on bad input) with a writer by path still
 * open leaves neither the file nor its temporary behind. */
static void test_exit_unclosed(void)
{
	char *path = xasprintf("%s/unclosed.mp", dir);
	pid_t pid = fork();
	if (pid == 0) {
		/* static (and volatile, or the store is dropped): the child
		 * exits holding it on purpose, which is no leak for
		 * LeakSanitizer to report */
		static struct sample s;
		static struct rec_writer *volatile w;
		sample_init(&s);
		sample_set_key(&s, "k");
		sample_set_text(&s, "a.txt", "x");
		w = rec_writer_open(path, REC_MSGPACK, 0);
		if (!w || rec_write(w, &s))
			_exit(3);
		exit(1);
	}
	int st = 0;
	waitpid(pid, &st, 0);
	tap_ok(WIFEXITED(st) && WEXITSTATUS(st) == 1, "child wrote a record and exited unclosed");
	char *tmp = xasprintf("%s.tmp.%ld", path, (long)pid);
	int left = access(tmp, F_OK) == 0, made = access(path, F_OK) == 0;
	if (!tap_ok(!left && !made, "nothing left behind"))
		tap_diag("temporary %s, file %s", left ? "left" : "gone", made ? "made" : "absent");
	unlink(tmp);
	unlink(path);
	free(tmp);
	free(path);
}

static void test_sha256(void)
{
	char hex[65];
	sha256_hex("abc", 3, hex);
	tap_ok(!strcmp(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"), "sha256 abc");
	sha256_hex("", 0, hex);
	tap_ok(!strcmp(hex, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"), "sha256 empty");
	const char *m = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
	sha256_hex(m, strlen(m), hex);
	tap_ok(!strcmp(hex, "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"), "sha256 448 bits");
	/* streaming in odd pieces equals one call */
	struct sha256 c;
	unsigned char d[32];
	char *big = xmalloc(1000001);
	memset(big, 'a', 1000000);
	sha256_init(&c);
	for (size_t i = 0; i < 1000000; i += 777)
		sha256_update(&c, big + i, i + 777 > 1000000 ? 1000000 - i : 777);
	sha256_final(&c, d);
	for (int i = 0; i < 32; i++)
		snprintf(hex + 2 * i, 3, "%02x", d[i]);
	tap_ok(!strcmp(hex, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0"),
	       "sha256 million a, streamed");
	free(big);
}

/* sample_set_json: numbers read back exactly (cJSON's own printing lost a
 * seed near 2^53 and doubles one ulp off), every other byte as cJSON's. */
static void test_json_numbers(void)
{
	double exact[] = { 9007199254740991.0, 9007199254740989.0, 4503599627370497.0,
			   nextafter(0.1, 1), nextafter(1e300, 0), -nextafter(2.5, 3) };
	for (size_t i = 0; i < sizeof exact / sizeof *exact; i++) {
		cJSON *j = cJSON_CreateObject();
		cJSON_AddNumberToObject(j, "seed", exact[i]);
		char *text = sample_json_print(j, 0);
		cJSON *back = cJSON_Parse(text);
		double got = back ? cJSON_GetObjectItem(back, "seed")->valuedouble : NAN;
		tap_ok(got == exact[i], "number %.17g reads back exactly from %s (got %.17g)",
		       exact[i], text, got);
		cJSON_Delete(back);
		cJSON_Delete(j);
		free(text);
	}
	/* as cJSON prints it where cJSON is exact */
	const char *src = "{\"a\":[1,-2,0.5,0.1,1e-07,123456789012,1.5e+300,null,true,false],"
			  "\"s\":\"q\\\"\\\\\\n\\t\\u0001 ✓\",\"o\":{\"x\":-0.25,\"y\":{}},\"e\":[]}";
	cJSON *j = cJSON_Parse(src);
	char *want = cJSON_PrintUnformatted(j), *got = sample_json_print(j, 0);
	tap_ok(want && !strcmp(want, got), "compact text as cJSON's: %s", got);
	free(got);
	cJSON_free(want);
	want = cJSON_Print(j);
	got = sample_json_print(j, 1);
	tap_ok(want && !strcmp(want, got), "pretty text as cJSON's");
	free(got);
	cJSON_free(want);
	struct sample smp;
	sample_init(&smp);
	cJSON *g = cJSON_CreateObject();
	cJSON_AddNumberToObject(g, "seed", 9007199254740991.0);
	sample_set_json(&smp, "gen.json", g);
	struct field *f = sample_get(&smp, "gen.json");
	tap_ok(f && f->len == 25 && !memcmp(f->data, "{\"seed\":9007199254740991}", 25),
	       "sample_set_json keeps a seed of 2^53-1: %s", f ? (const char *)f->data : "(none)");
	sample_release(&smp);
	cJSON_Delete(g);
	cJSON_Delete(j);
}

/* ---- rec_input: the input loop of every tool ---- */

/* A msgpack stream of N maps {"__key__": KEYS[i], "x.txt": "v"}; KEYS[i]
 * NULL writes a bad record (an array) instead. Written by hand: the record
 * writer refuses what these tests need. */
static void write_raw(const char *path, const char *const *keys, int n)
{
	msgpack_sbuffer sb;
	msgpack_packer pk;
	msgpack_sbuffer_init(&sb);
	msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
	for (int i = 0; i < n; i++) {
		if (!keys[i]) {
			msgpack_pack_array(&pk, 1);
			msgpack_pack_nil(&pk);
			continue;
		}
		msgpack_pack_map(&pk, 2);
		msgpack_pack_str_with_body(&pk, "__key__", 7);
		msgpack_pack_str_with_body(&pk, keys[i], strlen(keys[i]));
		msgpack_pack_str_with_body(&pk, "x.txt", 5);
		msgpack_pack_str_with_body(&pk, "v", 1);
	}
	FILE *f = fopen(path, "wb");
	fwrite(sb.data, 1, sb.size, f);
	fclose(f);
	msgpack_sbuffer_destroy(&sb);
}

/* stderr into a file while a test runs, then its text (malloc'd). */
static int saved_stderr = -1;
static char *err_path;

static void capture_start(void)
{
	fflush(stderr);
	saved_stderr = dup(2);
	FILE *f = fopen(err_path, "w");
	dup2(fileno(f), 2);
	fclose(f);
}

static char *capture_end(void)
{
	fflush(stderr);
	dup2(saved_stderr, 2);
	close(saved_stderr);
	char *t = (char *)read_file(err_path, NULL);
	return t ? t : xstrdup("");
}

/* Checks the captured text T holds the line WANT (exact) or, WANT starting
 * with '!', lacks any line containing the rest. */
static void has_line(const char *t, const char *want, const char *what)
{
	int neg = *want == '!';
	const char *w = want + neg;
	int found = 0;
	for (const char *p = t; *p && !found;) {
		const char *e = strchr(p, '\n');
		size_t n = e ? (size_t)(e - p) : strlen(p);
		found = neg ? memmem(p, n, w, strlen(w)) != NULL : n == strlen(w) && !memcmp(p, w, n);
		p += n + (e != NULL);
	}
	if (!tap_ok(neg ? !found : found, "%s", what)) {
		tap_diag("%s '%s' in:", neg ? "unwanted" : "no line", w);
		tap_diag("%s", t);
	}
}

/* Reads IN to its end: the count of samples, the last return in *RC. */
static int drain(struct rec_input *in, struct sample *s, int *rc)
{
	int n = 0;
	while ((*rc = rec_input_next(in, s)) > 0)
		n++;
	return n;
}

static void test_input(void)
{
	static const char *const good_keys[] = { "a", "b", "c" };
	static const char *const bad_keys[] = { "d", NULL, "e" };
	static const char *const dup_keys[] = { "f", "g", "f" };
	char *good = tmp_path("good.mp"), *bad = tmp_path("bad.mp"), *dupf = tmp_path("dup.mp");
	char *none = tmp_path("nosuch.mp"), *t, line[512];
	struct rec_input in;
	struct sample s;
	int rc, n;
	err_path = tmp_path("stderr");
	write_raw(good, good_keys, 3);
	write_raw(bad, bad_keys, 3);
	write_raw(dupf, dup_keys, 3);
	sample_init(&s);

	/* no files: standard input */
	int fd = dup(0);
	freopen(good, "rb", stdin);
	capture_start();
	rec_input_init(&in, NULL, 0, 0);
	n = drain(&in, &s, &rc);
	int rel = rec_input_release(&in);
	t = capture_end();
	dup2(fd, 0);
	close(fd);
	tap_ok(n == 3 && rc == 0 && rel == 0 && in.read == 3 && !*t,
	       "no files: stdin's 3 samples, then end, status 0 (%d, %d, %d, '%s')", n, rc, rel, t);
	free(t);

	/* an input that cannot be opened ends the loop without -k */
	char *two[] = { none, good };
	capture_start();
	rec_input_init(&in, two, 2, 0);
	n = drain(&in, &s, &rc);
	rel = rec_input_release(&in);
	t = capture_end();
	tap_ok(n == 0 && rc == -1 && rel == 1 && in.unread == 1,
	       "unopenable, no -k: the loop ends, status 1 (%d, %d, %d)", n, rc, rel);
	snprintf(line, sizeof line, "seva: open '%s': No such file or directory", none);
	has_line(t, line, "unopenable, no -k: WHERE: WHY");
	has_line(t, "!skipped", "unopenable, no -k: nothing said skipped");
	has_line(t, "!could not be read", "unopenable, no -k: no closing count");
	free(t);

	/* ... and is passed over with -k */
	capture_start();
	rec_input_init(&in, two, 2, 1);
	n = drain(&in, &s, &rc);
	rel = rec_input_release(&in);
	t = capture_end();
	tap_ok(n == 3 && rc == 0 && rel == EXIT_SKIPPED && in.unread == 1,
	       "unopenable, -k: the next input is read, status 3 (%d, %d, %d)", n, rc, rel);
	snprintf(line, sizeof line, "seva: open '%s': No such file or directory (skipped)", none);
	has_line(t, line, "unopenable, -k: WHERE: WHY (skipped)");
	has_line(t, "seva: 1 input could not be read", "unopenable, -k: the closing count");
	free(t);

	/* a record that cannot be read */
	char *one[] = { bad };
	capture_start();
	rec_input_init(&in, one, 1, 0);
	n = drain(&in, &s, &rc);
	rel = rec_input_release(&in);
	t = capture_end();
	tap_ok(n == 1 && rc == -1 && rel == 1, "bad record, no -k: 1 sample, then the end (%d, %d, %d)", n, rc,
	       rel);
	snprintf(line, sizeof line, "seva: %s: record 2: not a map", bad);
	has_line(t, line, "bad record, no -k: WHERE: WHY");
	has_line(t, "!skipped", "bad record, no -k: no \"skipped\", no closing count");
	free(t);

	capture_start();
	rec_input_init(&in, one, 1, 1);
	n = drain(&in, &s, &rc);
	rel = rec_input_release(&in);
	t = capture_end();
	tap_ok(n == 2 && rc == 0 && rel == EXIT_SKIPPED && in.skipped == 1 && in.read == 3,
	       "bad record, -k: 2 samples, 1 skipped of 3, status 3 (%d, %d, %d)", n, rc, rel);
	snprintf(line, sizeof line, "seva: %s: record 2: not a map (skipped)", bad);
	has_line(t, line, "bad record, -k: WHERE: WHY (skipped)");
	has_line(t, "seva: 1 of 3 samples skipped", "bad record, -k: the closing count");
	free(t);

	/* the tool refuses a sample */
	char *g[] = { good };
	for (int keep = 0; keep < 2; keep++) {
		capture_start();
		rec_input_init(&in, g, 1, keep);
		int r1 = rec_input_next(&in, &s), r2 = rec_input_next(&in, &s);
		int refused = rec_input_refuse(&in, "no thing");
		n = drain(&in, &s, &rc);
		rel = rec_input_release(&in);
		t = capture_end();
		if (keep)
			tap_ok(r1 == 1 && r2 == 1 && refused == 0 && n == 1 && rc == 0 && rel == EXIT_SKIPPED &&
				       in.skipped == 1,
			       "refusal, -k: counted, the loop goes on, status 3 (%d %d %d %d %d)", refused, n, rc,
			       rel, (int)in.skipped);
		else
			tap_ok(r1 == 1 && r2 == 1 && refused == -1 && n == 0 && rc == -1 && rel == 1,
			       "refusal, no -k: the loop ends, status 1 (%d %d %d %d)", refused, n, rc, rel);
		snprintf(line, sizeof line, "seva: %s: record 2 (key b): no thing%s", good,
			 keep ? " (skipped)" : "");
		has_line(t, line, keep ? "refusal, -k: WHERE: WHY (skipped)" : "refusal, no -k: WHERE: WHY");
		has_line(t, keep ? "seva: 1 of 3 samples skipped" : "!skipped",
			 keep ? "refusal, -k: the closing count" : "refusal, no -k: no closing count");
		free(t);
	}

	/* keys are unique in a stream, across its inputs too */
	char *dd[] = { dupf, good, good };
	capture_start();
	rec_input_init(&in, dd, 3, 1);
	n = drain(&in, &s, &rc);
	rel = rec_input_release(&in);
	t = capture_end();
	tap_ok(n == 5 && rc == 0 && rel == EXIT_SKIPPED && in.skipped == 4,
	       "repeated keys, -k: 5 samples, 4 skipped (%d, %d, %ld)", n, rc, in.skipped);
	snprintf(line, sizeof line, "seva: %s: record 3 (key f): key already used by record 1 (skipped)",
		 dupf);
	has_line(t, line, "a key again in its input: names both records");
	snprintf(line, sizeof line, "seva: %s: record 1 (key a): key already used by %s: record 1 (skipped)",
		 good, good);
	has_line(t, line, "a key again in a later input: names the earlier one's input");
	free(t);

	sample_release(&s);
	for (char **p = (char *[]){ good, bad, dupf, err_path, NULL }; *p; p++) {
		unlink(*p);
		free(*p);
	}
	free(none);
}

/* The rule for keys, in the reader and the writer. */
static void test_keys(void)
{
	static const char *const unfit[] = { "", "a/b", "..", ".x", "a.b", "../../x", "a\nb", "a\x7f" };
	static const char *const fit[] = { "000017", "vg_123", "COCO_train2014_0001", "é-ü", "a b" };
	char long_key[REC_KEY_MAX + 2];
	memset(long_key, 'k', sizeof long_key - 1);
	long_key[REC_KEY_MAX + 1] = 0;
	int ok = rec_key_unfit(long_key) != NULL;
	long_key[REC_KEY_MAX] = 0;
	ok = ok && rec_key_unfit(long_key) == NULL;
	tap_ok(ok, "a key of %d bytes is fit, one more is not", REC_KEY_MAX);
	for (size_t i = 0; i < ARRAY_LEN(unfit); i++)
		tap_ok(rec_key_unfit(unfit[i]) != NULL, "unfit key %zu ('%s' without control bytes) is refused", i,
		       strchr(unfit[i], '\n') ? "a b" : strchr(unfit[i], 0x7f) ? "a" : unfit[i]);
	for (size_t i = 0; i < ARRAY_LEN(fit); i++)
		tap_ok(rec_key_unfit(fit[i]) == NULL, "key '%s' is fit", fit[i]);

	char *path = tmp_path("keys.mp");
	static const char *const keys[] = { "ok1", "../../x", "ok2" };
	write_raw(path, keys, 3);
	struct rec_reader *r = rec_open(path);
	struct sample s;
	sample_init(&s);
	int r1 = rec_read(r, &s), r2 = rec_read(r, &s), r3 = rec_read(r, &s);
	int third = r3 == 1 && !strcmp(s.key, "ok2"), r4 = rec_read(r, &s);
	tap_ok(r1 == 1 && r2 == -1 && third && r4 == 0,
	       "the reader refuses key '../../x' and goes on (%d %d %d %d)", r1, r2, r3, r4);
	rec_close(r);
	struct rec_writer *w = rec_writer_open(path, REC_MSGPACK, 0);
	sample_set_key(&s, "../../x");
	tap_ok(rec_write(w, &s) == -1 && !rec_writer_failed(w), "the writer refuses it, and stays usable");
	sample_set_key(&s, "ok");
	tap_ok(rec_write(w, &s) == 0 && rec_writer_close(w) == 0, "and writes the next record");
	sample_release(&s);
	unlink(path);
	free(path);
}

int main(void)
{
	if (!mkdtemp(dir))
		die("mkdtemp:");
	test_sample_ops();
	test_roundtrip(REC_MSGPACK, 0, "msgpack (5 MB field)");
	test_roundtrip(REC_TAR, 0, "tar (5 MB field)");
	test_roundtrip(REC_JSONL, REC_BASE64, "jsonl --base64");
	test_json_types();
	test_json_numbers();
	test_tar_grouping();
	test_truncated(REC_MSGPACK, "msgpack");
	test_truncated(REC_TAR, "tar");
	test_exit_unclosed();
	test_sha256();
	test_input();
	test_keys();
	rmdir(dir);
	return tap_done();
}
