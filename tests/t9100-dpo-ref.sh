#!/bin/bash
# The reference's provenance: ref.json names the weights that scored it
# (model_id), seva-dpo refuses a ref.json of another model unless told,
# --ref-model scores the reference with another model once, as the starting
# model's is; seva-pair's exports never name images they do not write.
. "$(dirname "$0")/lib.sh"
PY=/usr/bin/python3
FIX=$TOP/tests/fixtures/train

seva-synth --tokenizer >tok.json
for s in 3 4; do
	seva-sft --config "$FIX/tiny-config.json" --tokenizer tok.json \
		--preprocessor "$FIX/tiny-preprocessor.json" -s $s --init-only -o m$s 2>init.err ||
		{ cat init.err; exit 1; }
done
seva-synth --split sft -n 8 -s 2 >sft.mp
$PY - sft.mp pairs.mp <<'PY'
import msgpack, sys
s = list(msgpack.Unpacker(open(sys.argv[1], "rb"), raw=False))
pk = lambda xs: b"".join(msgpack.packb(x, use_bin_type=True) for x in xs)
open(sys.argv[2], "wb").write(pk([{"__key__": x["__key__"], "png": x["png"],
    "prompt.txt": x["json"]["prompt"], "chosen.txt": x["json"]["answer"],
    "rejected.txt": "I see a purple heart and a pink star."} for x in s]))
PY
D="seva-dpo -j 1 -b 4 --lr 1e-2 -s 4 --max-steps 3"

expect "--score with m3" sh -c "seva-dpo -q -j 1 -m m3 -b 4 --score pairs.mp >s3.mp"
expect "--score with m4" sh -c "seva-dpo -q -j 1 -m m4 -b 4 --score pairs.mp >s4.mp"
seva-cat -q --jsonl s3.mp >s3.jsonl
seva-cat -q --jsonl s4.mp >s4.jsonl
check "ref.json records the scoring model's identity" \
	"$(jq -s 'map(.["ref.json"].model_id | test("^[0-9a-f]{16}$")) | all' s3.jsonl)" = true
check "one identity per model, two models differ" \
	"$(jq -s -r 'map(.["ref.json"].model_id) | unique | length' s3.jsonl):$(jq -s -r '.[0]["ref.json"].model_id' s3.jsonl | cmp -s - <(jq -s -r '.[0]["ref.json"].model_id' s4.jsonl) && echo same || echo differ)" = 1:differ
expect "rescoring gives the same identity" sh -c "seva-dpo -q -j 1 -m m3 -b 4 --score pairs.mp >s3b.mp"
same "... and the same ref.json" s3.mp s3b.mp

expect "ref.json of the starting model is used" $D -m m3 --metrics a.jsonl -o a s3.mp
expect_fail "ref.json of another model is refused" 1 $D -m m3 --metrics b.jsonl -o b s4.mp
stderr_has "the message names the record, the scoring model and the way out" \
	"s4.mp: record 1 .*ref.json was scored by 'm4' \(model_id [0-9a-f]{16}\), the reference of this run is [0-9a-f]{16}.*--allow-ref-mismatch"
check "... before any step" ! -s b.jsonl
$PY - s3.mp old.mp <<'PY'
import msgpack, sys
rs = list(msgpack.Unpacker(open(sys.argv[1], "rb"), raw=False))
for r in rs:
    del r["ref.json"]["model_id"]
open(sys.argv[2], "wb").write(b"".join(msgpack.packb(r, use_bin_type=True) for r in rs))
PY
expect_fail "ref.json without model_id (an older seva) is refused" 1 $D -m m3 -o b old.mp
stderr_has "... saying so" "model_id absent"
expect "--allow-ref-mismatch uses it" $D -m m3 --allow-ref-mismatch --metrics c.jsonl -o c s4.mp
stderr_has "... with a count on stderr" "8 pairs carry ref.json scored by another model"
expect "--ignore-ref scores afresh" $D -m m3 --ignore-ref --metrics d.jsonl -o d s4.mp
jq -c 'del(.pairs_per_s)' a.jsonl >a.curve
jq -c 'del(.pairs_per_s)' d.jsonl >d.curve
same "... the same run as the starting model's ref.json" a.curve d.curve

# --ref-model: the reference from m4 for a policy starting at m3, scored
# once before training: the same run as m4's ref.json.
expect "--ref-model" $D -m m3 --ref-model m4 --metrics r.jsonl -o r pairs.mp
jq -c 'del(.pairs_per_s)' r.jsonl >r.curve
jq -c 'del(.pairs_per_s)' c.jsonl >c.curve
same "--ref-model equals training on the other model's ref.json" r.curve c.curve
check "step 1 is not log 2: policy and reference differ" \
	"$(head -1 r.jsonl | jq '.loss != 0.6931471805599453')" = true
expect "--ref-model accepts ref.json that it scored" $D -m m3 --ref-model m4 --metrics r2.jsonl -o r2 s4.mp
jq -c 'del(.pairs_per_s)' r2.jsonl >r2.curve
same "... the same run" r.curve r2.curve
expect_fail "--ref-model refuses ref.json of the starting model" 1 $D -m m3 --ref-model m4 -o r3 s3.mp
jq '.text_config.max_position_embeddings = 32' m4/config.json >short.json
cp -r m4 short && cp short.json short/config.json
expect_fail "a reference model that cannot read the pairs alike is refused" 1 \
	$D -m m3 --ref-model short -o r4 pairs.mp
stderr_has "... naming what differs" "--ref-model short: its max_position_embeddings \(shorter\) differs"
expect_fail "--ref-model with --score: usage error" 2 seva-dpo -m m3 --ref-model m4 --score pairs.mp
expect_fail "--ref-model of a missing directory" 1 $D -m m3 --ref-model nowhere -o r5 pairs.mp
expect "resume keeps the reference: a checkpoint" $D -m m3 --ref-model m4 --save-every 1 --stop-after 1 -o rr pairs.mp
expect_fail "... resuming with another reference is refused" 1 $D -m m3 --resume -o rr pairs.mp
stderr_has "... as other settings" "other settings"

# seva-pair: --trl / --seva name image files, so they need --images.
seva-synth --split unlabeled -n 2 -q | seva-augment -q | seva-generate -q -m m3 --max-new-tokens 3 >gen.mp
expect_fail "--trl without --images: usage error" 2 seva-pair -q --trl t.jsonl gen.mp
stderr_has "... naming --images" "--trl names each pair's image file: give --images DIR"
expect_fail "--seva without --images: usage error" 2 seva-pair -q --seva t.json gen.mp
stderr_has "... naming --images" "--seva names each pair's image file: give --images DIR"
check "nothing written" ! -e t.jsonl -a ! -e t.json
expect_fail "--images without an export: usage error" 2 seva-pair -q --images imgs gen.mp
stderr_has "... saying what it is for" "--images writes the images that --trl and --seva name"

done_testing
