#!/bin/bash
# seva-dpo: loss log 2 exactly at step 0, rewards/accuracies rising, --score
# then ref.json equals the in-memory reference, resume equals uninterrupted,
# loss variants, --full, too-long pairs, bad input, the --score filter's
# empty input, /dev/full and | head.
. "$(dirname "$0")/lib.sh"
PY=/usr/bin/python3
FIX=$TOP/tests/fixtures/train

tiny_base base
# Pairs as seva-pair writes them: the clean image, prompt, chosen, rejected.
# The rejected answer hallucinates the same objects every time.
seva-synth --split sft -n 16 -s 2 >sft.mp
$PY - sft.mp pairs.mp long.mp bad.mp badimg.mp <<'PY'
import msgpack, sys
s = list(msgpack.Unpacker(open(sys.argv[1], "rb"), raw=False))
def pair(x, key=None, rejected="I see a purple heart and a pink star."):
    return {"__key__": key or x["__key__"], "png": x["png"], "prompt.txt": x["json"]["prompt"],
            "chosen.txt": x["json"]["answer"], "rejected.txt": rejected, "pair.json": {"source": x["__key__"]}}
pk = lambda xs: b"".join(msgpack.packb(x, use_bin_type=True) for x in xs)
open(sys.argv[2], "wb").write(pk([pair(x) for x in s]))
long = pair(s[0], "long", " ".join(["a red circle and"] * 30) + " a star.")
open(sys.argv[3], "wb").write(pk([pair(s[1]), long, pair(s[2])]))
nochosen = pair(s[3], "nochosen"); del nochosen["chosen.txt"]
open(sys.argv[4], "wb").write(pk([pair(s[4]), nochosen, pair(s[5])]))
badimg = dict(pair(s[6], "badimg"), png=b"not an image")
open(sys.argv[5], "wb").write(pk([pair(s[4]), badimg]))
PY
D="seva-dpo -j 1 -m base -b 4 --lr 1e-2 -s 4"

expect "DPO trains" $D --max-steps 12 --metrics m.jsonl -o a pairs.mp
check "TRL's metric names" "$(jq -s 'map(has("loss") and has("rewards/chosen") and has("rewards/rejected") and
	has("rewards/accuracies") and has("rewards/margins") and has("logps/chosen") and has("logps/rejected") and
	has("lr") and has("grad_norm") and has("pairs_per_s") and has("step") and has("epoch")) | all' m.jsonl)" = true
check "step 1: policy == reference, loss is log 2 exactly" "$(head -1 m.jsonl | jq '.loss == 0.6931471805599453 and .["rewards/margins"] == 0')" = true
check "rewards/accuracies rise (mean of the last 4 steps >= 0.75, first 0)" \
	"$(jq -s '.[0]["rewards/accuracies"] == 0 and (.[-4:] | map(.["rewards/accuracies"]) | add / 4) >= 0.75' m.jsonl)" = true
check "rewards/margins grow" "$(jq -s '(.[-4:] | map(.["rewards/margins"]) | add / 4) > 0.1' m.jsonl)" = true
check "LoRA: merged model and PEFT adapter" -f a/model.safetensors -a -f a/adapter/adapter_config.json
check "adapter: rank 16, alpha 32, all seven targets (the decoder's: a regex as PEFT reads it)" \
	"$(jq -c '[.r, .lora_alpha, (.target_modules | startswith("model\\.language_model\\.layers")),
		(.target_modules | [scan("[a-z]+_proj")] | length)]' a/adapter/adapter_config.json)" = "[16,32,true,7]"

# Reference scoring as its own stage
expect "--score writes pairs with ref.json" sh -c "$D --score pairs.mp >scored.mp"
expect "--score -o FILE, as every stream tool" $D --score -o scored-o.mp pairs.mp
same "-o FILE holds what stdout gets" scored.mp scored-o.mp
expect "--score -t -o FILE" $D --score -t -o scored.tar pairs.mp
check "a tar shard" "$(tar -tf scored.tar | grep -c 'ref.json$')" = 16
seva-cat --jsonl scored.mp >scored.jsonl
check "every pair has ref.json chosen/rejected/model" \
	"$(jq -s 'length == 16 and (map(.["ref.json"] | (.chosen | type) == "number" and (.rejected | type) == "number" and .model == "base") | all)' scored.jsonl)" = true
check "other fields pass through" "$(jq -s 'map(has("pair.json") and has("png")) | all' scored.jsonl)" = true
expect "training from ref.json" $D --max-steps 12 --metrics s.jsonl -o b scored.mp
jq -c 'del(.pairs_per_s)' m.jsonl >m.curve
jq -c 'del(.pairs_per_s)' s.jsonl >s.curve
same "--score then ref.json gives the same run as the in-memory reference" m.curve s.curve
same "... and the same weights" a/model.safetensors b/model.safetensors
$PY - scored.mp shifted.mp <<'PY'
import msgpack, sys
s = list(msgpack.Unpacker(open(sys.argv[1], "rb"), raw=False))
for x in s:
    x["ref.json"]["chosen"] -= 5.0
open(sys.argv[2], "wb").write(b"".join(msgpack.packb(x, use_bin_type=True) for x in s))
PY
expect "ref.json is really used" $D --max-steps 1 --metrics x.jsonl -o x shifted.mp
check "a shifted reference changes the step-1 loss" "$(jq '.loss != 0.6931471805599453' x.jsonl)" = true

# Resume
expect "uninterrupted" $D --epochs 1 --save-every 2 --metrics u.jsonl -o u pairs.mp
expect "--stop-after 3" $D --epochs 1 --save-every 2 --stop-after 3 --metrics r.jsonl -o r pairs.mp
expect "--resume" $D --epochs 1 --save-every 2 --resume --metrics r.jsonl -o r pairs.mp
jq -c 'del(.pairs_per_s)' u.jsonl >u.curve
jq -c 'del(.pairs_per_s)' r.jsonl >r.curve
same "resumed run equals the uninterrupted one" u.curve r.curve
same "... and writes the same model" u/model.safetensors r/model.safetensors

# Gradient accumulation: 2 passes of 2 pairs make the step that 1 pass of 4 makes
expect "--accum 2 -b 2" seva-dpo -j 1 -m base -b 2 --accum 2 --lr 1e-2 -s 4 --max-steps 12 --metrics acc.jsonl -o acc pairs.mp
check "accumulated steps follow the same curve (losses within 1e-5)" \
	"$(jq -s --slurpfile b acc.jsonl '[., $b] | transpose | map((.[0].loss - .[1].loss) | fabs < 1e-5) | all' m.jsonl)" = true

# Variants and full fine-tuning
for l in ipo hinge; do
	expect "--loss $l" $D --loss $l --max-steps 2 --metrics $l.jsonl -o $l pairs.mp
	check "--loss $l: finite losses" "$(jq -s 'map(.loss | isinfinite or isnan | not) | all' $l.jsonl)" = true
done
expect "hinge at step 1 is 1 (z = 0)" test "$(head -1 hinge.jsonl | jq .loss)" = 1
expect "cDPO + SFT term" $D --label-smoothing 0.1 --sft-weight 0.5 --max-steps 2 --metrics c.jsonl -o c pairs.mp
check "SFT term adds the chosen NLL per token at step 1" "$(head -1 c.jsonl | jq '.loss > 0.6931471805599453')" = true
# The loss family, combined with weights as TRL's loss_weights
expect "--loss sigmoid:0.8,bco_pair:0.2" $D --loss sigmoid:0.8,bco_pair:0.2 --max-steps 2 --metrics w.jsonl -o w pairs.mp
check "step 1 (z = 0): 0.8 log 2 + 0.2 * 2 log 2" \
	"$(head -1 w.jsonl | jq '(.loss - 1.2 * 0.6931471805599453) | fabs < 1e-12')" = true
for l in robust:1 exo_pair nca_pair bco_pair sppo_hard aot aot_unpaired apo_zero apo_down sigmoid_norm dpop sft mdpo_anchor \
	sigmoid:0.8,bco_pair:0.2,sft:1; do
	expect "--loss $l trains" $D --loss $l --label-smoothing 0.1 --max-steps 2 --metrics l.jsonl -o l pairs.mp
	check "--loss $l: finite losses" "$(jq -s 'length == 2 and (map(.loss | isinfinite or isnan | not) | all)' l.jsonl)" = true
	rm -rf l
done
expect "--sft-weight 0.5" $D --sft-weight 0.5 --max-steps 3 --metrics sw.jsonl -o sw pairs.mp
expect "--loss sigmoid,sft:0.5" $D --loss sigmoid,sft:0.5 --max-steps 3 --metrics sl.jsonl -o sl pairs.mp
jq -c 'del(.pairs_per_s)' sw.jsonl >sw.curve
jq -c 'del(.pairs_per_s)' sl.jsonl >sl.curve
same "--sft-weight W is the sft term of weight W" sw.curve sl.curve
expect "--reference-free" $D --reference-free --max-steps 1 --metrics rf.jsonl -o rf pairs.mp
check "rewards are beta * policy log-probs: no reference" \
	"$(jq '(.["rewards/chosen"] - 0.1 * .["logps/chosen"]) | fabs < 1e-9' rf.jsonl)" = true
check "... and the loss is not log 2" "$(jq '.loss != 0.6931471805599453' rf.jsonl)" = true
expect_fail "exo_pair without label smoothing: usage" 2 $D --loss exo_pair -o z pairs.mp
stderr_has "says why" "^seva-dpo: --loss exo_pair: --label-smoothing must be above 0"
expect_fail "robust at label smoothing 0.5: usage" 2 $D --loss robust --label-smoothing 0.5 -o z pairs.mp
stderr_has "says why" "^seva-dpo: --loss robust: --label-smoothing must be below 0.5"
expect_fail "a bad weight: usage" 2 $D --loss sigmoid:-1 -o z pairs.mp
stderr_has "names the option and the range" "^seva-dpo: --loss: not a number in \[0, 1e\+06\]: '-1'"
expect_fail "a term twice: usage" 2 $D --loss ipo,hinge,ipo:2 -o z pairs.mp
stderr_has "names it" "^seva-dpo: --loss: 'ipo' named twice"
expect_fail "--dpop-lambda out of range: usage" 2 $D --dpop-lambda -1 -o z pairs.mp
check "no model written on usage errors" ! -e z

# mDPO: the chosen answer on the corrupted image (the pair's augmented view)
seva-augment sft.mp >aug.mp
$PY - aug.mp mpairs.mp pixel.mp norecipe.mp <<'PY'
import msgpack, sys
s = list(msgpack.Unpacker(open(sys.argv[1], "rb"), raw=False))
def pair(x, recipe, **extra):
    return dict({"__key__": x["__key__"], "png": x["png"], "prompt.txt": x["json"]["prompt"],
                 "chosen.txt": x["json"]["answer"], "rejected.txt": "I see a purple heart and a pink star.",
                 "pair.json": {"source": x["__key__"], "recipe": recipe}}, **extra)
pk = lambda xs: b"".join(msgpack.packb(x, use_bin_type=True) for x in xs)
# SeVa's recipe: noise in tensor space over the clean image, as seva-pair leaves it
open(sys.argv[2], "wb").write(pk([pair(x, x["aug.json"]) for x in s]))
# a pixel-space view: the augmented image itself (here another sample's image)
open(sys.argv[3], "wb").write(pk([pair(x, {"recipe": "third-party"}, **{"aug.png": s[(i + 1) % len(s)]["png"]})
                                  for i, x in enumerate(s[:8])]))
open(sys.argv[4], "wb").write(pk([pair(s[0], None), pair(s[1], None)]))
PY
expect "--loss sigmoid,mdpo_cond,mdpo_anchor" $D --loss sigmoid,mdpo_cond,mdpo_anchor --max-steps 12 --metrics md.jsonl -o md mpairs.mp
check "step 1: three terms at z = 0, loss 3 log 2 exactly" "$(head -1 md.jsonl | jq '.loss == 3 * 0.6931471805599453')" = true
check "the corrupted image is another input: its log-prob differs" \
	"$(head -1 md.jsonl | jq '.["logps/chosen_corrupted"] != .["logps/chosen"]')" = true
expect "--loss mdpo_cond alone" $D --loss mdpo_cond --max-steps 12 --metrics mc.jsonl -o mc mpairs.mp
check "it trains the clean image's chosen answer above the corrupted one's (the gap grows by > 0.5 nats)" \
	"$(jq -s '(.[-1] | .["logps/chosen"] - .["logps/chosen_corrupted"]) > (.[0] | .["logps/chosen"] - .["logps/chosen_corrupted"]) + 0.5' mc.jsonl)" = true
expect "--score --loss mdpo_cond" sh -c "$D --score --loss mdpo_cond mpairs.mp >mscored.mp"
seva-cat --jsonl mscored.mp >mscored.jsonl
check "ref.json carries chosen_corrupted" \
	"$(jq -s 'map(.["ref.json"] | (.chosen_corrupted | type) == "number" and .chosen_corrupted != .chosen) | all' mscored.jsonl)" = true
expect "training from it" $D --loss sigmoid,mdpo_cond,mdpo_anchor --max-steps 12 --metrics ms.jsonl -o ms mscored.mp
jq -c 'del(.pairs_per_s)' md.jsonl >md.curve
jq -c 'del(.pairs_per_s)' ms.jsonl >ms.curve
same "... is the run with the reference in memory" md.curve ms.curve
same "... and the same weights" md/model.safetensors ms/model.safetensors
expect_fail "mdpo_cond on ref.json without chosen_corrupted" 1 $D --loss mdpo_cond --max-steps 1 -o y scored.mp
stderr_has "says what to do" "record 1 .*ref.json lacks .*chosen_corrupted.*--score --loss mdpo_cond"
expect "a pixel-space view (aug.png kept in the pair)" $D --loss mdpo_cond --max-steps 1 --metrics px.jsonl -o px pixel.mp
check "... is scored" "$(jq '.loss == 0.6931471805599453 and .["logps/chosen_corrupted"] != .["logps/chosen"]' px.jsonl)" = true
expect_fail "no recipe and no aug.png" 1 $D --loss mdpo_cond --max-steps 1 -o y norecipe.mp
stderr_has "names the record" "norecipe.mp: record 1 .*mdpo_cond: no augmented view"
expect "without mdpo_cond the same pairs need no view" $D --max-steps 1 --metrics nr.jsonl -o nr norecipe.mp
check "... and log no corrupted log-prob" "$(jq 'has("logps/chosen_corrupted")' nr.jsonl)" = false

expect_fail "--full with --lora: usage" 2 $D --full --lora 4 -o f pairs.mp
stderr_has "says which two" "^seva-dpo: --full trains the decoder's weights, --lora adapters: one or the other"
check "and writes nothing" ! -e f
expect "--full" $D --full --lr 1e-3 --max-steps 2 --metrics f.jsonl -o f pairs.mp
check "--full: loss log 2 at step 1 and no adapter" "$(head -1 f.jsonl | jq '.loss == 0.6931471805599453')" = true
check "--full writes no adapter" ! -e f/adapter

# Too long for the context (64 positions)
expect "a long pair is truncated" $D --max-steps 1 -o t long.mp
stderr_has "the truncation is counted" "1 pairs: answer truncated"
expect "--skip-long skips it" $D --skip-long --max-steps 1 -o t2 long.mp
stderr_has "and counts it" "1 pairs too long.*skipped"

# Bad input
# A nil or a number in a *.txt field is no answer (nor the text "null")
$PY -c '
import msgpack, sys
rs = list(msgpack.Unpacker(open("pairs.mp", "rb"), raw=False))[:2]
rs[1]["chosen.txt"] = None
open("nil.mp", "wb").write(b"".join(msgpack.packb(r, use_bin_type=True) for r in rs))
'
key=$($PY -c 'import msgpack; print(list(msgpack.Unpacker(open("nil.mp","rb"), raw=False))[1]["__key__"])')
expect_fail "--score: a nil chosen.txt" 1 $D --score -o /dev/null nil.mp
stderr_has "is the wrong type" "^seva-dpo: nil.mp: record 2 \(key $key\): field 'chosen.txt': wrong type \(want text\)$"
expect_fail "training: the same" 1 $D --max-steps 1 -o nil nil.mp
stderr_has "the same words" "field 'chosen.txt': wrong type \(want text\)$"
expect_fail "a pair without chosen.txt fails" 1 $D --max-steps 1 -o y bad.mp
stderr_has "the message names record and key" "record 2.*nochosen.*chosen.txt"
expect_fail "an image that does not decode fails" 1 $D --max-steps 1 -o y badimg.mp
stderr_has "the message names the record, key and field" "^seva-dpo: badimg.mp: record 2 \\(key badimg\\): field 'png': cannot decode image: not a JPEG or PNG image"
expect_fail "-k skips it and exits 3" 3 $D -k --max-steps 1 -o y bad.mp
stderr_has "-k counts" "^seva-dpo: 1 of 3 samples skipped"
stderr_has "-k: WHERE: WHY (skipped)" "^seva-dpo: bad.mp: record 2 \\(key nochosen\\): no chosen.txt \\(skipped\\)\$"
expect_fail "-k: a missing file is passed over, counted, exit 3" 3 $D -k --max-steps 1 -o k2 nosuch.mp pairs.mp
stderr_has "... counted" "^seva-dpo: 1 input could not be read"
check "... after training on the other file" -f k2/model.safetensors
expect_fail "--score on bad input fails" 1 sh -c "$D --score bad.mp >y.mp"
: >empty
expect "--score on empty input" sh -c "$D --score empty >empty.out"
check "no output" ! -s empty.out
expect_fail "training on no pairs fails" 1 $D -o z empty
stderr_has "says why" "^seva-dpo: no pairs: the input is empty, nothing to train on"
expect_fail "--score to /dev/full" 1 sh -c "$D --score pairs.mp >/dev/full"
$D --score -b 1 pairs.mp 2>head.err | head -c 1 >/dev/null
check "--score | head ends quietly" ! -s head.err
expect_fail "no -o: usage" 2 seva-dpo -m base pairs.mp
expect_fail "unknown loss: usage" 2 $D --loss kto -o z pairs.mp
stderr_has "names the option and its values" "^seva-dpo: --loss: not sigmoid, ipo, hinge, robust, .*, mdpo_cond or mdpo_anchor: 'kto'"
done_testing
