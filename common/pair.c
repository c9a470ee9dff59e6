#include "pair.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

#include "util.h"

static const char *const markers[] = { "</s>", "<|eot_id|>", "<|im_end|>", "<|endoftext|>" };

static int is_space(unsigned char c)
{
	return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

char *pair_clean(const char *text)
{
	size_t end = strlen(text);
	for (size_t i = 0; i < ARRAY_LEN(markers); i++) {
		const char *m = strstr(text, markers[i]);
		if (m && (size_t)(m - text) < end)
			end = (size_t)(m - text);
	}
	size_t start = 0;
	while (start < end && is_space((unsigned char)text[start]))
		start++;
	while (end > start && is_space((unsigned char)text[end - 1]))
		end--;
	return xstrndup(text + start, end - start);
}

char *pair_normalize(const char *text)
{
	utf8proc_uint8_t *folded = NULL;
	char *src;
	if (utf8proc_map((const utf8proc_uint8_t *)text, 0, &folded,
			 UTF8PROC_NULLTERM | UTF8PROC_STABLE | UTF8PROC_COMPOSE | UTF8PROC_CASEFOLD) < 0) {
		src = xstrdup(text);
		for (char *c = src; *c; c++)
			*c = (char)tolower((unsigned char)*c);
	} else {
		src = xstrdup((const char *)folded);
		free(folded);
	}
	char *out = xmalloc(strlen(src) + 1), *o = out;
	for (const char *c = src; *c;) {
		if (is_space((unsigned char)*c)) {
			while (is_space((unsigned char)*c))
				c++;
			if (o > out && *c)
				*o++ = ' ';
			continue;
		}
		*o++ = *c++;
	}
	*o = 0;
	free(src);
	return out;
}

size_t pair_length(const char *text)
{
	size_t n = 0;
	for (const unsigned char *c = (const unsigned char *)text; *c; c++)
		n += (*c & 0xc0) != 0x80;
	return n;
}
