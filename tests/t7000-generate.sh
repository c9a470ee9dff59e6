#!/bin/bash
# seva-generate: both views, gen.json, determinism and independence of the
# batch size, sampling seeds, views, LLaVA conversations, bad input, empty
# input, /dev/full, | head. On a tiny random model made by seva-sft.
. "$(dirname "$0")/lib.sh"
PY=/usr/bin/python3
FIX=$TOP/tests/fixtures/train

seva-synth --tokenizer >tok.json
expect "seva-sft --init-only makes a random model directory" \
	seva-sft --config "$FIX/tiny-config.json" --tokenizer tok.json \
	--preprocessor "$FIX/tiny-preprocessor.json" -s 3 --init-only -o model
check "it holds config, weights, tokenizer, preprocessor" -f model/config.json -a \
	-f model/model.safetensors -a -f model/tokenizer.json -a -f model/preprocessor_config.json

seva-synth --split unlabeled -n 5 -s 4 >plain.mp
seva-augment plain.mp >in.mp
G="seva-generate -j 1 -m model --max-new-tokens 6"
# The answers of a stream, and its mean log-probs rounded: batching changes
# the engine's float summation order, so log-probs agree to rounding only.
answers() {
	seva-cat --jsonl "$1" | jq -c '[.__key__, .["response.txt"], .["aug.response.txt"],
		(.["gen.json"] | del(.mean_logp)), (.["gen.json"].mean_logp | map_values(. * 1e4 | round))]' >"$2"
}

expect "generates on augmented samples" $G -o out.mp in.mp
seva-cat --jsonl out.mp >out.jsonl
check "5 samples out" "$(wc -l <out.jsonl)" = 5
check "every sample has both answers and gen.json" \
	"$(jq -s 'map(has("response.txt") and has("aug.response.txt") and has("gen.json")) | all' out.jsonl)" = true
check "input fields pass through" "$(jq -s 'map(has("aug.json") and has("png") and has("json")) | all' out.jsonl)" = true
seva-cat --jsonl in.mp | jq -r .__key__ >keys.in
jq -r .__key__ out.jsonl >keys.out
same "output keeps the input order" keys.in keys.out
check "gen.json: model, settings, tokens, mean_logp, finish per view" \
	"$(jq -s 'map(.["gen.json"] | .model == "model" and .settings.temperature == 0 and
	  (.tokens.clean | type) == "number" and (.mean_logp.aug | type) == "number" and
	  (.finish.clean == "stop" or .finish.clean == "length")) | all' out.jsonl)" = true
check "tokens are capped by --max-new-tokens" \
	"$(jq -s 'map(.["gen.json"].tokens.clean <= 6) | all' out.jsonl)" = true

expect "batch size 1" $G -b 1 -o b1.mp in.mp
expect "batch size 3" $G -b 3 -o b3.mp in.mp
answers out.mp out.ans; answers b1.mp b1.ans; answers b3.mp b3.ans
same "greedy output does not depend on the batch size (1 vs 8)" out.ans b1.ans
same "greedy output does not depend on the batch size (3 vs 8)" out.ans b3.ans
expect "greedy again" $G -o again.mp in.mp
expect "the largest seed, 2^53-1" $G -s 9007199254740991 -o smax.mp in.mp
seva-cat --jsonl smax.mp >smax.jsonl
check "gen.json: the seed is a number, exact" "$(jq -rs 'map(.["gen.json"].settings.seed) | unique | tostring' smax.jsonl)" = "[9007199254740991]"
same "deterministic" out.mp again.mp

S="$G --temperature 1.5 --top-k 50 --top-p 0.95"
expect "sampling, batch 8" $S -s 7 -o s8.mp in.mp
expect "sampling, batch 2" $S -s 7 -b 2 -o s2.mp in.mp
expect "sampling, another seed" $S -s 8 -o s9.mp in.mp
answers s8.mp s8.ans; answers s2.mp s2.ans
same "sampled output does not depend on the batch size" s8.ans s2.ans
check "another seed samples otherwise" "$(cmp -s s8.mp s9.mp && echo same || echo differs)" = differs
seva-cat --jsonl s8.mp | tail -2 | jq -c '{a: .["response.txt"], b: .["aug.response.txt"]}' >s8.tail
$PY - in.mp tail.mp <<'PY'
import msgpack, sys
s = list(msgpack.Unpacker(open(sys.argv[1], "rb"), raw=False))
open(sys.argv[2], "wb").write(b"".join(msgpack.packb(x, use_bin_type=True) for x in s[3:]))
PY
expect "sampling on a shard holding only the last two samples" $S -s 7 -o tail-out.mp tail.mp
seva-cat --jsonl tail-out.mp | jq -c '{a: .["response.txt"], b: .["aug.response.txt"]}' >shard.tail
same "a sample's answer does not depend on the rest of the stream" s8.tail shard.tail

expect "--views clean" $G --views clean -o clean.mp in.mp
seva-cat --jsonl clean.mp >clean.jsonl
check "--views clean writes no aug.response.txt" \
	"$(jq -s 'map(has("response.txt") and (has("aug.response.txt") | not)) | all' clean.jsonl)" = true
cmp -s <(jq -r '.["response.txt"]' clean.jsonl) <(jq -r '.["response.txt"]' out.jsonl) &&
	ok "clean answers are the same with one view" || not_ok "clean answers are the same with one view"
expect "--views aug" $G --views aug -o aug.mp in.mp
seva-cat --jsonl aug.mp >aug.jsonl
check "--views aug writes only aug.response.txt" \
	"$(jq -s 'map(has("aug.response.txt") and (has("response.txt") | not)) | all' aug.jsonl)" = true
expect "samples without augmentation" $G -o plain-out.mp plain.mp
seva-cat --jsonl plain-out.mp >plain.jsonl
check "without aug.* only the clean answer" \
	"$(jq -s 'map(has("response.txt") and (has("aug.response.txt") | not)) | all' plain.jsonl)" = true

# The augmented view really is another input: diffusion at t=999 is nearly pure noise.
seva-augment -r diffusion:t=999 plain.mp >noisy.mp
expect "strong noise" $G --views both -o noisy-out.mp noisy.mp
seva-cat --jsonl noisy-out.mp >noisy.jsonl
check "mean log-probs differ between the clean and the noised view" \
	"$(jq -s 'map(.["gen.json"].mean_logp | .clean != .aug) | any' noisy.jsonl)" = true

# LLaVA conversations, bad samples
$PY - plain.mp bad.mp conv.mp <<'PY'
import msgpack, sys
s = list(msgpack.Unpacker(open(sys.argv[1], "rb"), raw=False))
good = s[0]
noq = {"__key__": "noq", "png": good["png"], "json": {"id": 3}}
badimg = {"__key__": "badimg", "png": b"not an image", "json": {"prompt": "What is it?"}}
open(sys.argv[2], "wb").write(b"".join(msgpack.packb(x, use_bin_type=True) for x in [s[1], noq, badimg, s[2]]))
conv = {"__key__": "conv", "png": good["png"], "json": {"conversations": [
    {"from": "human", "value": "<image>\n" + good["json"]["prompt"]}, {"from": "gpt", "value": "x"}]}}
open(sys.argv[3], "wb").write(msgpack.packb(conv, use_bin_type=True) + msgpack.packb(good, use_bin_type=True))
PY
expect "LLaVA conversations" $G --views clean -o conv-out.mp conv.mp
seva-cat --jsonl conv-out.mp >conv.jsonl
check "the first human turn is the question (same answer as json.prompt)" \
	"$(jq -s '.[0]["response.txt"] == .[1]["response.txt"]' conv.jsonl)" = true
expect_fail "a sample without a question fails" 1 $G -o bad-out.mp bad.mp
stderr_has "the message names the record and the key" "record 2.*noq.*(prompt|conversations)"
expect_fail "-k skips bad samples and exits 3" 3 $G -k -o k-out.mp bad.mp
stderr_has "-k names the undecodable image and its field" "record 3 \\(key badimg\\): field 'png': cannot decode image: not a JPEG or PNG image"
stderr_has "-k: WHERE: WHY (skipped)" "^seva-generate: bad.mp: record 3 \\(key badimg\\): field 'png': cannot decode image: [^:]* \\(skipped\\)\$"
stderr_has "-k reports the count" "^seva-generate: 2 of 4 samples skipped"
seva-cat --jsonl k-out.mp >k.jsonl
check "-k writes the good samples" "$(jq -r .__key__ k.jsonl | tr '\n' ' ')" = "000001 000002 "
expect_fail "no -k: the first bad sample ends the run" 1 $G -o nk-out.mp bad.mp
check "no -k: no skip count" "$(grep -c 'skipped' "$TMP/.err")" = 0
# keys are unique in a stream: the second input under other keys
seva-cat --jsonl --base64 conv.mp | jq -c '.__key__ += "_2"' >conv2.jsonl
expect_fail "-k: a missing file is passed over, counted, exit 3" 3 $G -k --views clean -o m-out.mp conv.mp nosuch.mp conv2.jsonl
stderr_has "... named" "^seva-generate: open 'nosuch.mp'"
stderr_has "... counted" "^seva-generate: 1 input could not be read"
seva-cat --jsonl m-out.mp >m.jsonl
check "... and the other files still answered" "$(jq -r .__key__ m.jsonl | tr '\n' ' ')" = "conv 000000 conv_2 000000_2 "
expect_fail "a key again in the next input" 1 $G --views clean -o m-out.mp conv.mp conv.mp
stderr_has "names both records" "^seva-generate: conv.mp: record 1 \\(key conv\\): key already used by conv.mp: record 1\$"
head -c 100 in.mp >trunc.mp
expect_fail "truncated msgpack fails" 1 $G -o t.mp trunc.mp

: >empty
expect "empty input" $G -o empty.out empty
check "empty input: no output" ! -s empty.out
expect_fail "/dev/full fails" 1 sh -c "$G in.mp >/dev/full"
stderr_has "/dev/full: write error" "error"
$G -b 1 in.mp 2>head.err | head -c 1 >/dev/null
check "| head ends quietly" ! -s head.err
expect_fail "no model: usage" 2 seva-generate in.mp
expect_fail "bad --views: usage" 2 $G --views sideways in.mp
stderr_has "names the option and its values" "^seva-generate: --views: not clean, aug or both: 'sideways'"
expect_fail "missing model directory" 1 seva-generate -m nowhere in.mp
done_testing
