/* Hugging Face model directories and PEFT adapters: load and atomic save.
 * Names in the model's table use llava-hf's old layout (names.md); files in
 * the newer layout are mapped on load. */
#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "safetensors.h"
#include "tensor.h"
#include "util.h"
#include "vlm.h"
#include "vlm_family.h"
#include "vlm_impl.h"

/* NAME in the table's layout; "" when it cannot be one of ours. */
static void canonical_name(const struct vlm *m, char *out, size_t n, const char *name)
{
	const char *from = "", *to = "";
	const char *const (*l)[2] = vlm_family_of(&m->cfg)->layouts;
	for (int i = 0; l && l[i][0]; i++)
		if (!strncmp(name, l[i][0], strlen(l[i][0]))) {
			from = l[i][0];
			to = l[i][1];
			break;
		}
	if ((size_t)snprintf(out, n, "%s%s", to, name + strlen(from)) >= n)
		out[0] = 0;
}

static int has_suffix(const char *s, const char *suffix)
{
	size_t n = strlen(s), k = strlen(suffix);
	return n >= k && !strcmp(s + n - k, suffix);
}

#define PEFT_PREFIX "base_model.model."

/* Reads the tensors of ST whose names map into the table entries of PART
 * (VLM_PART_LORA or the base parts). LORA: the file is an adapter (PEFT
 * prefix, nothing else allowed); else unknown tensors are counted and
 * reported once. Every non-optional table tensor must be found. */
static int load_tensors(struct vlm *m, const struct safetensors *st, const char *where, int lora,
			unsigned saved)
{
	char *loaded = xcalloc(m->ntensors, 1);
	int unknown = 0, ret = -1;
	const char *first_unknown = NULL;

	for (int i = 0; i < st->ntensors; i++) {
		const struct safetensors_tensor *ft = &st->tensors[i];
		const char *name = ft->name;
		char cname[sizeof m->tensors[0].name];
		if (lora) {
			if (strncmp(name, PEFT_PREFIX, strlen(PEFT_PREFIX))) {
				error("%s: tensor '%s': not a PEFT adapter name (%s...)", ft->file, name,
				      PEFT_PREFIX);
				goto out;
			}
			name += strlen(PEFT_PREFIX);
		}
		canonical_name(m, cname, sizeof cname, name);
		struct vlm_tensor *t = cname[0] ? vlm_tensor_find(m, cname) : NULL;
		/* an adapter also holds its modules_to_save (SAVED parts) whole */
		if (t && (t->part == VLM_PART_LORA) != lora && !(lora && (t->part & (int)saved)))
			t = NULL;
		if (!t && !lora && cname[0] && has_suffix(cname, ".bias")) {
			/* a bias beside a weight we use: a decoder with biases we would drop */
			char wname[sizeof cname];
			snprintf(wname, sizeof wname, "%.*sweight", (int)(strlen(cname) - 4), cname);
			if (vlm_tensor_find(m, wname)) {
				error("%s: tensor '%s': the model has no such bias (a decoder with attention or MLP biases is not supported)",
				      ft->file, ft->name);
				goto out;
			}
		}
		if (!t) {
			if (lora) {
				error("%s: tensor '%s' is not a LoRA tensor of this model (rank %d, decoder q/k/v/o/gate/up/down only)",
				      ft->file, ft->name, m->lora.rank);
				goto out;
			}
			if (!unknown++)
				first_unknown = ft->name;
			continue;
		}
		long k = t - m->tensors;
		if (loaded[k]) {
			error("%s: tensor '%s' appears twice (both name layouts?)", ft->file, cname);
			goto out;
		}
		if (safetensors_read_f32(ft, t->data, t->shape, t->ndim))
			goto out;
		loaded[k] = 1;
	}

	const struct vlm_impl *im = m->impl;
	const struct vlm_tensor *embed = &m->tensors[im->embed];
	const char *head = vlm_family_of(&m->cfg)->head_name;
	for (int k = 0; k < m->ntensors; k++) {
		struct vlm_tensor *t = &m->tensors[k];
		if (loaded[k] || t->optional ||
		    ((t->part == VLM_PART_LORA) != lora && !(lora && (t->part & (int)saved))))
			continue;
		if (!lora && m->cfg.tie_embeddings && !strcmp(t->name, head) &&
		    loaded[embed - m->tensors] && embed->numel == t->numel) {
			memcpy(t->data, embed->data, (size_t)t->numel * sizeof(float));
			continue;
		}
		error("%s: tensor '%s' is missing", where, t->name);
		goto out;
	}
	if (unknown)
		warn("%s: %d tensor%s not used by the model (first: '%s')", where, unknown,
		     unknown == 1 ? "" : "s", first_unknown);
	ret = 0;
out:
	tensor_weights_changed(m->params);
	free(loaded);
	return ret;
}

struct vlm *vlm_load(const char *dir)
{
	struct vlm_config cfg;
	struct preprocess pre;
	struct safetensors st;
	char *path = xasprintf("%s/config.json", dir);
	struct vlm *m = NULL;

	/* every configuration file before gigabytes of weights */
	if (vlm_config_load(&cfg, path) || vlm_config_finish(&cfg))
		goto fail;
	free(path);
	path = xasprintf("%s/preprocessor_config.json", dir);
	if (vlm_preprocess_load(&pre, path, &cfg))
		goto fail;
	free(path);
	path = xasprintf("%s/processor_config.json", dir);
	if (vlm_processor_check(path, &cfg))
		goto fail;
	free(path);
	path = NULL;
	if (safetensors_open_dir(&st, dir, "model")) {
		static const char *const pt[] = {"pytorch_model.bin", "pytorch_model.bin.index.json"};
		for (size_t i = 0; i < ARRAY_LEN(pt); i++) {
			path = xasprintf("%s/%s", dir, pt[i]);
			if (access(path, F_OK) == 0) {
				error("%s: only safetensors weights are read; convert %s", dir, pt[i]);
				break;
			}
			free(path);
			path = NULL;
		}
		goto fail;
	}
	m = vlm_new(&cfg);
	int r = load_tensors(m, &st, dir, 0, 0);
	safetensors_release(&st);
	if (r)
		goto fail;
	m->pre = pre;
	free(m->dir);
	m->dir = xstrdup(dir);
	return m;
fail:
	free(path);
	if (m)
		vlm_free(m);
	return NULL;
}

/* --- writing --- */

/* config.json: the family's keys, then the decoder's. */
static char *config_json(const struct vlm_config *c, const char *dtype)
{
	const struct vlm_family *fam = vlm_family_of(c);
	cJSON *j = cJSON_CreateObject();
	cJSON *arch = cJSON_AddArrayToObject(j, "architectures");
	cJSON_AddItemToArray(arch, cJSON_CreateString(fam->architecture));
	cJSON_AddStringToObject(j, "model_type", fam->model_type);
	fam->config_json(j, c, !strcmp(dtype, "BF16") ? "bfloat16"
			       : !strcmp(dtype, "F16") ? "float16"
						       : "float32");
	vlm_config_text_json(cJSON_AddObjectToObject(j, "text_config"), c);
	char *s = cJSON_Print(j);
	cJSON_Delete(j);
	return s;
}

static int write_text(const char *dir, const char *name, char *text)
{
	char *path = xasprintf("%s/%s", dir, name);
	int r = write_file_atomic(path, text, strlen(text));
	free(path);
	free(text);
	return r;
}

/* Starts writing DIR: refuses to replace anything that is not a model or
 * adapter directory (a typo must not wipe a home directory), makes the
 * parent and a fresh DIR.tmp.PID, returned malloc'd. NULL on failure. */
static char *dir_begin(const char *dir, const char *marker)
{
	struct stat sb;
	if (!*dir) {
		error("empty directory name");
		return NULL;
	}
	if (stat(dir, &sb) == 0) {
		if (!S_ISDIR(sb.st_mode)) {
			error("%s: exists and is not a directory", dir);
			return NULL;
		}
		char *mark = xasprintf("%s/%s", dir, marker);
		int has = access(mark, F_OK) == 0;
		free(mark);
		int empty = 1;
		DIR *d = opendir(dir);
		struct dirent *e;
		while (d && (e = readdir(d)))
			if (strcmp(e->d_name, ".") && strcmp(e->d_name, ".."))
				empty = 0;
		if (d)
			closedir(d);
		if (!has && !empty) {
			error("%s: exists and has no %s: not replacing it", dir, marker);
			return NULL;
		}
	}
	char *parent = xstrdup(dir);
	char *slash = strrchr(parent, '/');
	if (slash && slash != parent) {
		*slash = 0;
		if (mkdir_p(parent)) {
			free(parent);
			return NULL;
		}
	}
	free(parent);
	char *tmp = xasprintf("%s.tmp.%ld", dir, (long)getpid());
	/* a leftover with this PID, or a link planted there (dangling or
	 * not): removed, never followed */
	if (remove_tree(tmp) < 0) {
		free(tmp);
		return NULL;
	}
	if (mkdir(tmp, 0755)) {
		error("mkdir '%s':", tmp);
		free(tmp);
		return NULL;
	}
	tmp_track(tmp); /* an exit before the commit leaves nothing */
	return tmp;
}

/* Puts TMP in DIR's place: an atomic exchange when DIR exists, so a reader
 * sees the old or the new directory, never a mix; then the old one goes. */
static int dir_commit(char *tmp, const char *dir, int ok)
{
	int ret = -1;
	tmp_untrack(tmp);
	if (!ok)
		goto out;
	if (renameat2(AT_FDCWD, tmp, AT_FDCWD, dir, RENAME_EXCHANGE) == 0) {
		ret = 0; /* tmp now holds the old directory */
		goto out;
	}
	if (errno == ENOENT && rename(tmp, dir) == 0) {
		free(tmp);
		return 0;
	}
	if (errno == EINVAL || errno == ENOSYS) { /* no exchange on this file system */
		char *old = xasprintf("%s.old.%ld", dir, (long)getpid());
		if (rename(dir, old) == 0 && rename(tmp, dir) == 0) {
			remove_tree(old);
			free(old);
			free(tmp);
			return 0;
		}
		free(old);
	}
	error("rename '%s' to '%s':", tmp, dir);
out:
	remove_tree(tmp);
	free(tmp);
	return ret;
}

static int copy_file(const char *from_dir, const char *to_dir, const char *name)
{
	char *src = xasprintf("%s/%s", from_dir, name);
	int r = 0;
	if (access(src, F_OK) == 0) {
		size_t len;
		unsigned char *data = read_file(src, &len);
		char *dst = xasprintf("%s/%s", to_dir, name);
		r = data ? write_file_atomic(dst, data, len) : -1;
		free(data);
		free(dst);
	}
	free(src);
	return r;
}

/* "out/" and "out" name the same directory; DIR.tmp.PID must sit beside it. */
static char *dir_name(const char *dir)
{
	size_t n = strlen(dir);
	while (n > 1 && dir[n - 1] == '/')
		n--;
	return xstrndup(dir, n);
}

static int lora_write(struct vlm *m, const char *dir);

/* The model's files into TMP, an empty directory. With ADAPTER and LoRA,
 * the adapter first (TMP/adapter, PEFT's files), then merged. */
static int model_write(struct vlm *m, const char *tmp, const char *dtype, int adapter)
{
	static const char *const copied[] = {
		"tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
		"tokenizer.model", "added_tokens.json", "preprocessor_config.json",
		"processor_config.json", "generation_config.json", "chat_template.json",
		"chat_template.jinja",
	};
	if (adapter && m->lora.rank > 0) {
		char *sub = xasprintf("%s/adapter", tmp);
		int r = mkdir(sub, 0755) ? error("mkdir '%s':", sub) : lora_write(m, sub);
		free(sub);
		if (r < 0)
			return -1;
		vlm_lora_merge(m);
	}
	int ok = write_text(tmp, "config.json", config_json(&m->cfg, dtype)) == 0;

	struct safetensors_entry *e = xcalloc(m->ntensors, sizeof *e);
	int n = 0;
	for (int k = 0; k < m->ntensors; k++) {
		const struct vlm_tensor *t = &m->tensors[k];
		if (t->part == VLM_PART_LORA ||
		    (m->cfg.tie_embeddings && !strcmp(t->name, vlm_family_of(&m->cfg)->head_name)))
			continue;
		e[n++] = (struct safetensors_entry){t->name, t->data, t->ndim, t->shape};
	}
	if (ok) {
		char *path = xasprintf("%s/model.safetensors", tmp);
		ok = safetensors_write(path, e, n, dtype) == 0;
		free(path);
	}
	free(e);
	for (size_t i = 0; ok && m->dir && i < ARRAY_LEN(copied); i++)
		ok = copy_file(m->dir, tmp, copied[i]) == 0;
	char *pp = xasprintf("%s/preprocessor_config.json", tmp);
	if (ok && access(pp, F_OK) != 0)
		ok = write_text(tmp, "preprocessor_config.json", vlm_family_of(&m->cfg)->preprocess_json(&m->pre, &m->cfg)) == 0;
	free(pp);
	return ok ? 0 : -1;
}

static int save_model(struct vlm *m, const char *dir, const char *dtype, int adapter,
		      const char *name, const char *text)
{
	if (strcmp(dtype, "F32") && strcmp(dtype, "BF16") && strcmp(dtype, "F16"))
		return error("%s: cannot save as '%s' (F32, BF16 or F16)", dir, dtype);
	char *tmp = dir_begin(dir, "config.json");
	if (!tmp)
		return -1;
	int ok = model_write(m, tmp, dtype, adapter) == 0;
	if (ok && name)
		ok = write_text(tmp, name, xstrdup(text)) == 0;
	return dir_commit(tmp, dir, ok);
}

/* --- PEFT adapters --- */

static void add_int(cJSON *o, const char *k, long v)
{
	cJSON_AddNumberToObject(o, k, (double)v);
}

static const char *const lora_modules[] = {
	"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj",
};

/* The module a part's tensors live under: the first name component of
 * its first tensor ("multi_modal_projector"), past a leading "model."
 * ("model.connector.modality_projection.proj.weight": "connector"; PEFT
 * would take "model" for the whole model); NULL if the part has none. */
static char *part_module(const struct vlm *m, int part)
{
	for (int k = 0; k < m->ntensors; k++)
		if (m->tensors[k].part == part) {
			const char *name = m->tensors[k].name;
			if (!strncmp(name, "model.", 6) && strchr(name + 6, '.'))
				name += 6;
			const char *dot = strchr(name, '.');
			return dot ? xstrndup(name, (size_t)(dot - name)) : NULL;
		}
	return NULL;
}

/* The parts whose tensors train in full beside the adapters (the projector
 * by default): PEFT's modules_to_save, stored whole in the adapter so that
 * base + adapter is the trained model. */
static unsigned saved_parts(const struct vlm *m)
{
	unsigned p = 0;
	for (int k = 0; k < m->ntensors; k++) {
		const struct vlm_tensor *t = &m->tensors[k];
		if (t->part != VLM_PART_LORA && t->grad && (t->part & (int)m->trainable))
			p |= (unsigned)t->part;
	}
	return p;
}

/* NAME as a PEFT adapter's key: PEFT_PREFIX and the module path of
 * transformers 5, which PEFT 0.21 needs for modules_to_save (it converts
 * only LoRA keys of older layouts); malloc'd. */
static char *peft_key(const struct vlm *m, const char *name)
{
	const char *const (*l)[2] = vlm_family_of(&m->cfg)->module_layout;
	for (int i = 0; l && l[i][0]; i++)
		if (!strncmp(name, l[i][0], strlen(l[i][0])))
			return xasprintf(PEFT_PREFIX "%s%s", l[i][1], name + strlen(l[i][0]));
	return xasprintf(PEFT_PREFIX "%s", name);
}

/* PEFT's two files into DIR, an existing directory. */
static int lora_write(struct vlm *m, const char *tmp)
{
	unsigned saved = saved_parts(m);

	cJSON *j = cJSON_CreateObject();
	cJSON_AddStringToObject(j, "peft_type", "LORA");
	cJSON_AddStringToObject(j, "task_type", "CAUSAL_LM");
	add_int(j, "r", m->lora.rank);
	cJSON_AddItemToObject(j, "lora_alpha", vlm_float_json(m->lora.alpha));
	cJSON_AddItemToObject(j, "lora_dropout", vlm_float_json(m->lora.dropout));
	cJSON_AddBoolToObject(j, "use_rslora", m->lora.rslora);
	cJSON_AddStringToObject(j, "bias", "none");
	cJSON_AddBoolToObject(j, "fan_in_fan_out", 0);
	cJSON_AddBoolToObject(j, "inference_mode", 1);
	const char *dec = vlm_family_of(&m->cfg)->peft_decoder;
	if (dec) {
		/* "model\.text_model\.layers\.\d+\.(self_attn|mlp)\.(q_proj|...)",
		 * as PEFT's re.fullmatch reads it */
		struct buf re;
		buf_init(&re);
		buf_printf(&re, "%s\\.layers\\.\\d+\\.(self_attn|mlp)\\.(", dec);
		for (size_t i = 0, n = 0; i < ARRAY_LEN(lora_modules); i++)
			if (m->lora.targets & (1u << i))
				buf_printf(&re, "%s%s", n++ ? "|" : "", lora_modules[i]);
		buf_printf(&re, ")");
		cJSON_AddStringToObject(j, "target_modules", (char *)re.data);
		buf_release(&re);
	} else {
		cJSON *tm = cJSON_AddArrayToObject(j, "target_modules");
		for (size_t i = 0; i < ARRAY_LEN(lora_modules); i++)
			if (m->lora.targets & (1u << i))
				cJSON_AddItemToArray(tm, cJSON_CreateString(lora_modules[i]));
	}
	cJSON_AddStringToObject(j, "base_model_name_or_path", m->dir ? m->dir : "");
	cJSON *ms = cJSON_AddArrayToObject(j, "modules_to_save");
	for (int part = 1; part < VLM_PART_LORA; part <<= 1) {
		char *name = saved & (unsigned)part ? part_module(m, part) : NULL;
		if (name)
			cJSON_AddItemToArray(ms, cJSON_CreateString(name));
		free(name);
	}
	char *text = cJSON_Print(j);
	cJSON_Delete(j);
	int ok = write_text(tmp, "adapter_config.json", text) == 0;

	struct safetensors_entry *e = xcalloc(m->ntensors, sizeof *e);
	char **names = xcalloc(m->ntensors, sizeof *names);
	int n = 0;
	for (int k = 0; k < m->ntensors; k++) {
		const struct vlm_tensor *t = &m->tensors[k];
		if (t->part != VLM_PART_LORA && !(t->part & (int)saved))
			continue;
		names[n] = peft_key(m, t->name);
		e[n] = (struct safetensors_entry){names[n], t->data, t->ndim, t->shape};
		n++;
	}
	if (ok) {
		char *path = xasprintf("%s/adapter_model.safetensors", tmp);
		ok = safetensors_write(path, e, n, "F32") == 0;
		free(path);
	}
	for (int i = 0; i < n; i++)
		free(names[i]);
	free(names);
	free(e);
	return ok ? 0 : -1;
}

static int save_lora(struct vlm *m, const char *dir)
{
	if (m->lora.rank <= 0)
		return error("%s: the model has no LoRA adapters to save", dir);
	char *tmp = dir_begin(dir, "adapter_config.json");
	if (!tmp)
		return -1;
	return dir_commit(tmp, dir, lora_write(m, tmp) == 0);
}

int vlm_save(struct vlm *m, const char *dir, const char *dtype)
{
	char *d = dir_name(dir);
	int r = save_model(m, d, dtype, 0, NULL, NULL);
	free(d);
	return r;
}

int vlm_save_merged(struct vlm *m, const char *dir, const char *dtype, const char *name,
		    const char *text)
{
	char *d = dir_name(dir);
	int r = save_model(m, d, dtype, 1, name, text);
	free(d);
	return r;
}

int vlm_save_check(const char *dir)
{
	char *d = dir_name(dir);
	char *tmp = dir_begin(d, "config.json");
	int r = -1;
	if (tmp) {
		/* a directory can be made on a full disk; a file's bytes cannot be written */
		char *probe = xasprintf("%s/config.json", tmp);
		r = write_file_atomic(probe, "{}\n", 3);
		free(probe);
		tmp_untrack(tmp);
		if (remove_tree(tmp) < 0)
			r = -1;
		free(tmp);
	}
	free(d);
	return r;
}

int vlm_lora_save(struct vlm *m, const char *dir)
{
	char *d = dir_name(dir);
	int r = save_lora(m, d);
	free(d);
	return r;
}

/* adapter_config.json → rank, alpha, rsLoRA, target mask; refuses what we
 * would silently compute differently (DoRA, per-layer patterns, biases).
 * lora_dropout acts in training only: any value in [0, 1) loads. */
static int lora_config(const char *path, const struct vlm *m, int *rank, float *alpha,
		       int *rslora, unsigned *targets, unsigned *saved)
{
	unsigned char *text = read_file(path, NULL);
	if (!text)
		return -1;
	cJSON *j = cJSON_Parse((const char *)text);
	free(text);
	int ret = -1;
	const cJSON *v;
	if (!cJSON_IsObject(j)) {
		error("%s: not a JSON object", path);
		goto out;
	}
	v = cJSON_GetObjectItemCaseSensitive(j, "peft_type");
	if (!cJSON_IsString(v) || strcmp(v->valuestring, "LORA")) {
		error("%s: peft_type: not \"LORA\"", path);
		goto out;
	}
	v = cJSON_GetObjectItemCaseSensitive(j, "r");
	if (!cJSON_IsNumber(v) || v->valuedouble < 1 || v->valuedouble > 65536 ||
	    v->valuedouble != (int)v->valuedouble) {
		error("%s: r: not a rank in [1, 65536]", path);
		goto out;
	}
	*rank = (int)v->valuedouble;
	v = cJSON_GetObjectItemCaseSensitive(j, "lora_alpha");
	*alpha = (float)*rank; /* PEFT's default alpha is 8 with r 8: scale 1 */
	if (v && !cJSON_IsNumber(v)) {
		error("%s: lora_alpha: not a number", path);
		goto out;
	}
	if (v)
		*alpha = (float)v->valuedouble;
	v = cJSON_GetObjectItemCaseSensitive(j, "use_rslora");
	if (v && !cJSON_IsNull(v) && !cJSON_IsBool(v)) {
		error("%s: use_rslora: not true or false", path);
		goto out;
	}
	*rslora = cJSON_IsTrue(v);
	v = cJSON_GetObjectItemCaseSensitive(j, "lora_dropout");
	if (v && !cJSON_IsNull(v) && (!cJSON_IsNumber(v) || !(v->valuedouble >= 0 && v->valuedouble < 1))) {
		error("%s: lora_dropout: not a number in [0, 1)", path);
		goto out;
	}
	v = cJSON_GetObjectItemCaseSensitive(j, "bias");
	if (v && !cJSON_IsNull(v) && (!cJSON_IsString(v) || strcmp(v->valuestring, "none"))) {
		error("%s: bias: only \"none\" is supported", path);
		goto out;
	}
	/* modules_to_save: the whole modules of ours that it names */
	*saved = 0;
	v = cJSON_GetObjectItemCaseSensitive(j, "modules_to_save");
	if (cJSON_IsArray(v)) {
		const cJSON *s;
		cJSON_ArrayForEach(s, v) {
			unsigned part = 0;
			for (int p = 1; cJSON_IsString(s) && p < VLM_PART_LORA; p <<= 1) {
				char *name = part_module(m, p);
				if (name && !strcmp(name, s->valuestring))
					part = (unsigned)p;
				free(name);
			}
			if (!part) {
				error("%s: modules_to_save: '%s' is not a module of this model", path,
				      cJSON_IsString(s) ? s->valuestring : "?");
				goto out;
			}
			*saved |= part;
		}
		cJSON_DetachItemViaPointer(j, (cJSON *)v);
		cJSON_Delete((cJSON *)v);
	}
	static const char *const refused[] = {"use_dora", "layers_to_transform",
					      "rank_pattern", "alpha_pattern", "modules_to_save"};
	for (size_t i = 0; i < ARRAY_LEN(refused); i++) {
		v = cJSON_GetObjectItemCaseSensitive(j, refused[i]);
		if (v && !cJSON_IsNull(v) && !cJSON_IsFalse(v) &&
		    !((cJSON_IsObject(v) || cJSON_IsArray(v)) && !cJSON_GetArraySize(v))) {
			error("%s: %s: not supported", path, refused[i]);
			goto out;
		}
	}
	v = cJSON_GetObjectItemCaseSensitive(j, "target_modules");
	*targets = 0;
	if (cJSON_IsString(v)) {
		/* a regex: the modules it names */
		for (size_t i = 0; i < ARRAY_LEN(lora_modules); i++)
			if (strstr(v->valuestring, lora_modules[i]))
				*targets |= 1u << i;
	} else if (cJSON_IsArray(v)) {
		const cJSON *s;
		cJSON_ArrayForEach(s, v) {
			size_t i = 0;
			while (i < ARRAY_LEN(lora_modules) &&
			       !(cJSON_IsString(s) && !strcmp(s->valuestring, lora_modules[i])))
				i++;
			if (i == ARRAY_LEN(lora_modules)) {
				error("%s: target_modules: '%s' is not one of q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj",
				      path, cJSON_IsString(s) ? s->valuestring : "?");
				goto out;
			}
			*targets |= 1u << i;
		}
	}
	if (!*targets) {
		error("%s: target_modules: no decoder module named", path);
		goto out;
	}
	ret = 0;
out:
	cJSON_Delete(j);
	return ret;
}

int vlm_lora_load(struct vlm *m, const char *dir)
{
	int rank, rslora;
	float alpha;
	unsigned targets, saved;
	char *path = xasprintf("%s/adapter_config.json", dir);
	int r = lora_config(path, m, &rank, &alpha, &rslora, &targets, &saved);
	free(path);
	if (r)
		return -1;
	if (m->lora.rank > 0 && (m->lora.rank != rank || m->lora.targets != targets))
		return error("%s: adapter has rank %d and targets 0x%x; the model's LoRA has rank %d and targets 0x%x",
			     dir, rank, targets, m->lora.rank, m->lora.targets);
	struct safetensors st;
	if (safetensors_open_dir(&st, dir, "adapter_model"))
		return -1;
	if (m->lora.rank <= 0)
		vlm_lora_add(m, rank, alpha, targets, 0);
	m->lora.alpha = alpha;
	m->lora.rslora = rslora;
	r = load_tensors(m, &st, dir, 1, saved);
	safetensors_release(&st);
	return r;
}
