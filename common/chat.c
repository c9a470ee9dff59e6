/* chat — the conversation templates, and their ids made the way LLaVA makes
 * them: the prompt split at "<image>" with each chunk tokenized on its own
 * (unless the tokenizer has an "<image>" token), BOS first where the
 * template wants it, and answers as the tail of prompt + answer tokenized
 * together. */
#include "chat.h"

#include <stdlib.h>
#include <string.h>

#include "util.h"

/* A human turn renders as [start][system ]<user>(<image>|<plain>)Q<ask>,
 * [start] and [system ] on the first turn only, <next> before the later
 * ones; an answer follows <ask> after one space and ends with the
 * end-of-turn token. */
struct template {
	const char *name;
	int bos;                /* the tokenizer's BOS first */
	const char *start;      /* text before the first turn ("" for none) */
	const char *system;     /* followed by one space; NULL for none */
	const char *user;       /* "USER: " */
	const char *image;      /* after the image block: "\n" */
	const char *plain;      /* between user and a question without an image */
	const char *ask;        /* " ASSISTANT:" */
	const char *next;       /* before a later human turn */
	const char *eot;        /* the end-of-turn token; NULL: the tokenizer's eos */
};

/* LLaVA's conv_vicuna_v1 / conv_llava_v1 (SeparatorStyle.TWO, seps " " and
 * "</s>"); "seva" is the same without a system line. */
static const char VICUNA_SYSTEM[] =
	"A chat between a curious human and an artificial intelligence assistant. "
	"The assistant gives helpful, detailed, and polite answers to the human's questions.";

/* "smolvlm": SmolVLM-Instruct's chat_template.jinja for a user turn of
 * [image, text] or [text] and add_generation_prompt: "<|im_start|>User:"
 * (": " without an image), the question, "<end_of_utterance>\nAssistant:";
 * its tokenizer adds no BOS. */
static const struct template templates[] = {
	{ "llava_v1", 1, "", VICUNA_SYSTEM, "USER: ", "\n", "", " ASSISTANT:", "", NULL },
	{ "vicuna_v1", 1, "", VICUNA_SYSTEM, "USER: ", "\n", "", " ASSISTANT:", "", NULL },
	{ "seva", 1, "", NULL, "USER: ", "\n", "", " ASSISTANT:", "", NULL },
	{ "smolvlm", 0, "<|im_start|>", NULL, "User:", "", " ", "<end_of_utterance>\nAssistant:",
	  "\n", "<end_of_utterance>" },
};

static const struct template *find_template(const char *name)
{
	for (size_t i = 0; i < ARRAY_LEN(templates); i++)
		if (!strcmp(templates[i].name, name))
			return &templates[i];
	return NULL;
}

int chat_init(struct chat *c, const char *name, const struct tokenizer *tok, int image_token)
{
	const struct template *tp = find_template(name);
	memset(c, 0, sizeof(*c));
	if (!tp) {
		struct buf b;
		buf_init(&b);
		for (size_t i = 0; i < ARRAY_LEN(templates); i++)
			buf_printf(&b, "%s%s", i ? ", " : "", templates[i].name);
		error("chat template '%s': unknown (known: %s)", name, (char *)b.data);
		buf_release(&b);
		return -1;
	}
	c->name = tp->name;
	c->tok = tok;
	c->image_token = image_token;
	c->image_block = "<image>";
	c->no_bos = !tp->bos;
	c->eos = tp->eot ? tokenizer_token_id(tok, tp->eot) : tokenizer_eos(tok);
	if (c->eos < 0 && tp->eot)
		return error("chat template '%s': the tokenizer has no '%s' token", name, tp->eot);
	if (c->eos < 0)
		return error("chat template '%s': the tokenizer has no end-of-sequence token", name);
	return 0;
}

/* The text of a human turn (see struct template); the image as the
 * family's block (c->image_block). */
static void render_turn(struct buf *b, const struct chat *c, const struct template *tp,
			const char *q, int first, int with_image)
{
	if (first)
		buf_printf(b, "%s", tp->start);
	else
		buf_printf(b, "%s", tp->next);
	if (first && tp->system)
		buf_printf(b, "%s ", tp->system);
	buf_printf(b, "%s", tp->user);
	if (with_image)
		buf_printf(b, "%s%s", c->image_block, tp->image);
	else
		buf_printf(b, "%s", tp->plain);
	buf_printf(b, "%s%s", q, tp->ask);
}

char *chat_render(const struct chat *c, const char *question, int with_image)
{
	struct buf b;
	buf_init(&b);
	render_turn(&b, c, find_template(c->name), question, 1, with_image);
	return (char *)buf_detach(&b, NULL);
}

static int append(const struct chat *c, const char *text, size_t len, int **ids, int *n, int *cap)
{
	int *t;
	int k = tokenizer_encode(c->tok, text, len, 0, &t);
	if (k < 0)
		return -1;
	if (*n + k > *cap) {
		*cap = 2 * (*n + k) + 16;
		*ids = xrealloc(*ids, (size_t)*cap * sizeof(int));
	}
	memcpy(*ids + *n, t, (size_t)k * sizeof(int));
	*n += k;
	free(t);
	return 0;
}

static void push(int **ids, int *n, int *cap, int id)
{
	if (*n == *cap) {
		*cap = 2 * *cap + 16;
		*ids = xrealloc(*ids, (size_t)*cap * sizeof(int));
	}
	(*ids)[(*n)++] = id;
}

/* Appends the ids of TEXT, its "<image>" placeholders made c->image_token:
 * by the tokenizer's own "<image>" token where it has one, else (original
 * LLaVA's tokenizer_image_token) by tokenizing the chunks around it apart. */
static int append_with_image(const struct chat *c, const char *text, int **ids, int *n, int *cap)
{
	static const char ph[] = "<image>";
	int own = tokenizer_token_id(c->tok, ph);
	if (own >= 0) {
		int from = *n;
		if (append(c, text, strlen(text), ids, n, cap) < 0)
			return -1;
		for (int i = from; i < *n; i++)
			if ((*ids)[i] == own)
				(*ids)[i] = c->image_token;
		return 0;
	}
	const char *p = text, *q;
	while ((q = strstr(p, ph))) {
		if (append(c, p, (size_t)(q - p), ids, n, cap) < 0)
			return -1;
		push(ids, n, cap, c->image_token);
		p = q + sizeof(ph) - 1;
	}
	return append(c, p, strlen(p), ids, n, cap);
}

int chat_encode_prompt(const struct chat *c, const char *question, int with_image, int **ids)
{
	int n = 0, cap = 0;
	char *text = chat_render(c, question, with_image);
	int bos = c->no_bos ? -1 : tokenizer_bos(c->tok);
	*ids = NULL;
	if (bos >= 0)
		push(ids, &n, &cap, bos);
	int rc = append_with_image(c, text, ids, &n, &cap);
	free(text);
	if (rc < 0) {
		free(*ids);
		*ids = NULL;
		return -1;
	}
	if (!*ids)
		*ids = xmalloc(sizeof(int));
	return n;
}

int chat_encode_answer(const struct chat *c, const char *answer, int **ids)
{
	const struct template *tp = find_template(c->name);
	int *head, *whole;
	/* the tag the answer follows: the ask's last line ("ASSISTANT:") */
	const char *nl = strrchr(tp->ask, '\n');
	char *ctx = xstrdup(nl ? nl + 1 : tp->ask + strspn(tp->ask, " "));
	char *text = xasprintf("%s %s", ctx, answer);
	int nh = tokenizer_encode(c->tok, ctx, strlen(ctx), 0, &head);
	int nw = nh < 0 ? -1 : tokenizer_encode(c->tok, text, strlen(text), 0, &whole);
	free(ctx);
	free(text);
	*ids = NULL;
	if (nh < 0 || nw < 0) {
		if (nh >= 0)
			free(head);
		return -1;
	}
	/* The answer's ids are what follows the tag when both are tokenized
	 * together (SentencePiece's "▁" goes with the answer's first word).
	 * Tokens never merge across the tag's colon in the files we know; if
	 * one did, the shared prefix still decides where the answer starts. */
	int k = 0;
	while (k < nh && k < nw && head[k] == whole[k])
		k++;
	int n = nw - k;
	*ids = xmalloc((size_t)(n + 1) * sizeof(int));
	memcpy(*ids, whole + k, (size_t)n * sizeof(int));
	(*ids)[n++] = c->eos;
	free(head);
	free(whole);
	return n;
}

void chat_weigh_per_turn(float *w, int n)
{
	for (int i = 0; i < n;) {
		int j = i;
		while (j < n && w[j] != 0)
			j++;
		for (int t = i; t < j; t++)
			w[t] = 1.0f / (float)(j - i);
		i = j > i ? j : i + 1;
	}
}

int chat_encode_conversation(const struct chat *c, const char *const *turns, int n_turns,
			     int with_image, int **ids, float **weights)
{
	const struct template *tp = find_template(c->name);
	int n = 0, cap = 0, wcap = 0, bos = c->no_bos ? -1 : tokenizer_bos(c->tok);
	struct buf b;

	*ids = NULL;
	*weights = NULL;
	if (n_turns < 1)
		return error("chat template '%s': a conversation needs at least one turn", c->name);
	buf_init(&b);
	if (bos >= 0)
		push(ids, &n, &cap, bos);
	for (int t = 0; t < n_turns; t++) {
		int from = n;
		if (t % 2 == 0) {
			b.len = 0;
			render_turn(&b, c, tp, turns[t], t == 0, with_image && t == 0);
			if (append_with_image(c, (char *)b.data, ids, &n, &cap) < 0)
				goto fail;
		} else {
			int *a;
			int k = chat_encode_answer(c, turns[t], &a);
			if (k < 0)
				goto fail;
			for (int i = 0; i < k; i++)
				push(ids, &n, &cap, a[i]);
			free(a);
		}
		if (n > wcap) {
			wcap = cap;
			*weights = xrealloc(*weights, (size_t)wcap * sizeof(float));
		}
		for (int i = from; i < n; i++)
			(*weights)[i] = (float)(t % 2);
	}
	buf_release(&b);
	if (!*ids) {
		*ids = xmalloc(sizeof(int));
		*weights = xmalloc(sizeof(float));
	}
	if (bos >= 0)
		(*weights)[0] = 0;
	return n;
fail:
	buf_release(&b);
	free(*ids);
	free(*weights);
	*ids = NULL;
	*weights = NULL;
	return -1;
}

size_t chat_clean_answer(const struct chat *c, char *text, size_t n)
{
	const char *eos = tokenizer_token(c->tok, c->eos);
	const char *marks[] = { "</s>", eos };
	/* memmem, and no strchr on the text: it may hold NUL bytes */
	for (size_t i = 0; i < ARRAY_LEN(marks); i++) {
		char *p = marks[i] && *marks[i] ? memmem(text, n, marks[i], strlen(marks[i])) : NULL;
		if (p)
			n = (size_t)(p - text);
	}
	while (n && (text[n - 1] == ' ' || text[n - 1] == '\t' || text[n - 1] == '\r' ||
		     text[n - 1] == '\n'))
		n--;
	size_t k = 0;
	while (k < n && (text[k] == ' ' || text[k] == '\t' || text[k] == '\r' || text[k] == '\n'))
		k++;
	memmove(text, text + k, n - k);
	text[n - k] = 0;
	return n - k;
}
