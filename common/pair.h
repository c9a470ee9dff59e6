/* pair — what seva-pair compares: answers cleaned of end-of-turn markers,
 * an optional normalized form, and lengths in characters. Uses utf8proc. */
#ifndef SEVA_PAIR_H
#define SEVA_PAIR_H

#include <stddef.h>

/* TEXT cut at its first end-of-turn marker ("</s>", "<|eot_id|>",
 * "<|im_end|>", "<|endoftext|>") with surrounding whitespace trimmed.
 * Malloc'd; the caller frees. */
char *pair_clean(const char *text);
/* TEXT case-folded (Unicode, utf8proc) with every run of whitespace made one
 * space and the ends trimmed: two answers that differ only in case or
 * spacing normalize equal. Malloc'd; invalid UTF-8 falls back to ASCII
 * lower-casing. */
char *pair_normalize(const char *text);
/* The number of characters (UTF-8 code points) in TEXT. */
size_t pair_length(const char *text);

#endif
