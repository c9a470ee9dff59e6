/* test_prompt — the model's settings without its weights (lm_load_text,
 * for seva-tok) are those lm_load gives the model tools: the same prompt
 * ids, BOS rule, image token and stop ids, for pipelines/base as shipped,
 * with tokenizer_config.json's add_bos_token false, and with config.json's
 * image_token_id spelling. */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "prompt.h"
#include "tap.h"
#include "util.h"

static char dir[] = "/tmp/test_prompt.XXXXXX";

static void put(const char *path, const void *data, size_t len)
{
	if (write_file_atomic(path, data, len))
		die("cannot write '%s'", path);
}

/* A copy of pipelines/base in D (the weights linked); ADD_BOS 0 writes
 * tokenizer_config.json saying false; RENAME gives the image token as
 * image_token_id. */
static void make_model(const char *d, int add_bos, int rename)
{
	size_t len;
	char *p;
	mkdir_p(d);
	unsigned char *tok = read_file("pipelines/base/tokenizer.json", &len);
	p = xasprintf("%s/tokenizer.json", d);
	put(p, tok, len);
	free(p);
	free(tok);
	unsigned char *cfg = read_file("pipelines/base/config.json", &len);
	cJSON *j = cJSON_Parse((char *)cfg);
	free(cfg);
	if (rename) {
		cJSON *v = cJSON_DetachItemFromObject(j, "image_token_index");
		cJSON_AddItemToObject(j, "image_token_id", v);
	}
	char *text = cJSON_Print(j);
	cJSON_Delete(j);
	p = xasprintf("%s/config.json", d);
	put(p, text, strlen(text));
	free(p);
	free(text);
	if (!add_bos) {
		p = xasprintf("%s/tokenizer_config.json", d);
		put(p, "{\"add_bos_token\": false}", 24);
		free(p);
	}
	char *target = realpath("pipelines/base/model.safetensors", NULL);
	p = xasprintf("%s/model.safetensors", d);
	if (!target || symlink(target, p))
		die("cannot link the weights into '%s'", d);
	free(p);
	free(target);
	p = xasprintf("%s/preprocessor_config.json", d);
	unsigned char *pre = read_file("pipelines/base/preprocessor_config.json", &len);
	put(p, pre, len);
	free(pre);
	free(p);
}

static void compare(const char *name, int add_bos, int rename)
{
	char *d = xasprintf("%s/%s", dir, name);
	struct lm full, text;
	make_model(d, add_bos, rename);
	int a = lm_load(&full, d), b = lm_load_text(&text, d);
	if (!tap_ok(a == 0 && b == 0 && text.m == NULL, "%s: both load, the text one without weights", name))
		return;
	int *x = NULL, *y = NULL;
	int nx = chat_encode_prompt(&full.chat, "Is there a red circle?", 1, &x);
	int ny = chat_encode_prompt(&text.chat, "Is there a red circle?", 1, &y);
	int same = nx > 0 && nx == ny && !memcmp(x, y, (size_t)nx * sizeof *x);
	if (!tap_ok(same, "%s: the same prompt ids", name)) {
		tap_diag_ids("lm_load     ", x, nx);
		tap_diag_ids("lm_load_text", y, ny);
	}
	tap_ok(nx > 0 && (x[0] == tokenizer_bos(full.tok)) == add_bos,
	       "%s: BOS first exactly when add_bos_token is not false (first id %d)", name, nx > 0 ? x[0] : -1);
	tap_ok(full.chat.image_token == 4 && text.chat.image_token == 4,
	       "%s: image token 4 in both (%d, %d)", name, full.chat.image_token, text.chat.image_token);
	tap_ok(full.n_stop == text.n_stop && !memcmp(full.stop_ids, text.stop_ids, sizeof full.stop_ids[0] * full.n_stop),
	       "%s: the same stop ids", name);
	free(x);
	free(y);
	lm_release(&full);
	lm_release(&text);
	free(d);
}

int main(int argc, char **argv)
{
	(void)argc;
	tap_chdir_top(argv[0], "pipelines/base/config.json");
	if (!mkdtemp(dir))
		die("mkdtemp:");
	compare("shipped", 1, 0);
	compare("nobos", 0, 0);
	compare("renamed", 1, 1);
	remove_tree(dir);
	return tap_done();
}
