/* conversation — the question and the turns of a sample, by LLaVA's
 * conversation rules, for every tool that reads them (seva-cat --llava,
 * seva-pair, seva-generate, seva-sft, seva-dpo): json.prompt (+ json.answer)
 * or json.conversations ({"from": ..., "value": ...}); the roles that ask
 * and answer; LLaVA's "<image>" placeholder removed (the chat template puts
 * the image token where the model family wants it). Record-side: uses
 * sample, util and cJSON only. */
#ifndef SEVA_CONVERSATION_H
#define SEVA_CONVERSATION_H

#include "sample.h"

struct cJSON;

/* A turn's "from": 0 asks ("human", "user"), 1 answers ("gpt",
 * "assistant"), -1 neither. */
int conversation_role(const char *from);
/* TEXT without LLaVA's "<image>" placeholders (each with the newline after
 * it) and with white space trimmed at both ends: "<image>\nWhat is it?" and
 * "What is it?\n<image>" are both "What is it?". Malloc'd. */
char *conversation_strip_image(const char *text);
/* The first asking turn with a string value of the conversations array
 * CONV, stripped; NULL if none. Malloc'd. */
char *conversation_first_question(const struct cJSON *conv);
/* The Nth (from 0) asking turn of CONV with a string value, stripped as
 * conversation_first_question strips; NULL past the last. Malloc'd. */
char *conversation_nth_question(const struct cJSON *conv, int n);
/* TEXT without the answer-format instructions LLaVA-1.5's data appends to
 * its short-answer questions ("Answer the question using a single word or
 * phrase.", "Answer with the option's letter from the given choices
 * directly."), wherever they stand, then trimmed: what SeVa's step 1 does
 * to its OCR-VQA questions. Malloc'd. */
char *conversation_strip_format(const char *text);
/* How many "<image>" placeholders TEXT holds. */
int conversation_image_count(const char *text);
/* 0 if S holds at most one image: -1 with a reason naming the fields in
 * *WHY (static text, overwritten by the next call) for a video field, a
 * second clean image field, or more than one "<image>" placeholder in the
 * asking turns of J (S's json field, parsed; NULL: not looked at). Several
 * images and video are not supported by any family: a sample is one image
 * and its text. */
int conversation_one_image(const struct sample *s, const struct cJSON *j, const char **why);
/* The question of S: json.prompt, or else the first asking turn of
 * json.conversations; stripped. Malloc'd; NULL with a reason in *WHY
 * (static text) if there is none or S holds more than one image
 * (conversation_one_image). */
char *conversation_question(const struct sample *s, const char **why);
/* The turns of S for supervised training, alternating ask, answer:
 * json.prompt + json.answer (2 turns), or json.conversations (questions
 * stripped, answers as they are; a last unanswered question dropped).
 * *TURNS is a malloc'd array of malloc'd strings (conversation_turns_free).
 * Returns the count (even, >= 2), or -1 with a reason in *WHY (also for
 * more than one image, as conversation_question). */
int conversation_turns(const struct sample *s, char ***turns, const char **why);
void conversation_turns_free(char **turns, int n);

#endif
