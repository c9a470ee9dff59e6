#!/bin/bash
# seva-dpo --eval, --eval-split, --eval-every, --keep best: evaluation lines
# with TRL's names that equal a separate --score computation, training that
# the evaluation leaves alone bit for bit, the best model equal to the run
# stopped at its step, a split by key that does not depend on the input's
# order, resume keeping the same best, usage errors.
. "$(dirname "$0")/lib.sh"
PY=/usr/bin/python3
FIX=$TOP/tests/fixtures/train

tiny_base base
seva-synth --split sft -n 24 -s 2 >sft.mp
# Training pairs, and held-out ones: other samples, a third of them with
# the answers the other way round, so that what training learns helps on
# some and hurts on others and the evaluation curve turns (its lowest
# eval_loss is at step 8 of 12 here).
$PY - sft.mp pairs.mp eval.mp rev.mp <<'PY'
import msgpack, sys
s = list(msgpack.Unpacker(open(sys.argv[1], "rb"), raw=False))
bad = "I see a purple heart and a pink star."
def pair(x, swap=False):
    c, r = x["json"]["answer"], bad
    if swap:
        c, r = r, c
    return {"__key__": x["__key__"], "png": x["png"], "prompt.txt": x["json"]["prompt"],
            "chosen.txt": c, "rejected.txt": r, "pair.json": {"source": x["__key__"]}}
pk = lambda xs: b"".join(msgpack.packb(x, use_bin_type=True) for x in xs)
train = [pair(x) for x in s[:16]]
open(sys.argv[2], "wb").write(pk(train))
open(sys.argv[3], "wb").write(pk([pair(x, i % 3 == 0) for i, x in enumerate(s[16:])]))
open(sys.argv[4], "wb").write(pk(train[::-1]))
PY
D="seva-dpo -j 1 -m base -b 4 --lr 1e-2 -s 4 --schedule constant --warmup-ratio 0"

expect "--eval PAIRS --eval-every 3" $D --max-steps 12 --eval eval.mp --eval-every 3 --metrics e.jsonl -o e pairs.mp
jq -c 'select(has("eval_loss"))' e.jsonl >e.eval
check "evaluations before the first step, every 3 steps and after the last" \
	"$(jq -c -s 'map(.step)' e.eval)" = "[0,3,6,9,12]"
check "with TRL's eval_ names" "$(jq -s 'map(keys == ["epoch", "eval_logps/chosen", "eval_logps/rejected", "eval_loss",
	"eval_rewards/accuracies", "eval_rewards/chosen", "eval_rewards/margins", "eval_rewards/rejected", "step"]) | all' e.eval)" = true
check "step 0: policy == reference, eval_loss is log 2 exactly" \
	"$(head -1 e.eval | jq '.eval_loss == 0.6931471805599453 and .["eval_rewards/margins"] == 0')" = true
check "the training lines are all there" "$(jq -s 'map(select(has("loss"))) | length' e.jsonl)" = 12

# The last evaluation against --score: the trained model's log-probs and
# the base's on the held-out pairs, the loss and metrics written out in jq.
expect "--score with the trained model" sh -c "seva-dpo -j 1 -m e -b 4 --score eval.mp >pol.mp"
expect "--score with the base" sh -c "seva-dpo -j 1 -m base -b 4 --score eval.mp >ref.mp"
seva-cat --jsonl pol.mp | jq -c '.["ref.json"]' >pol.jsonl
seva-cat --jsonl ref.mp | jq -c '.["ref.json"]' >ref.jsonl
jq -s -c --slurpfile r ref.jsonl '[., $r] | transpose | map({c: (0.1 * (.[0].chosen - .[1].chosen)),
	r: (0.1 * (.[0].rejected - .[1].rejected)), pc: .[0].chosen, pr: .[0].rejected}) |
	map(. + {loss: ((1 + ((.r - .c) | exp)) | log)}) | length as $n |
	{eval_loss: (map(.loss) | add / $n), "eval_rewards/chosen": (map(.c) | add / $n),
	 "eval_rewards/rejected": (map(.r) | add / $n),
	 "eval_rewards/accuracies": (map(if .c > .r then 1 else 0 end) | add / $n),
	 "eval_rewards/margins": (map(.c - .r) | add / $n),
	 "eval_logps/chosen": (map(.pc) | add / $n), "eval_logps/rejected": (map(.pr) | add / $n)}' pol.jsonl >want.json
tail -1 e.eval >got.json
check "the last evaluation equals the --score computation (every metric within 1e-4 relative)" \
	"$(jq -n --slurpfile w want.json --slurpfile g got.json '$w[0] | to_entries |
	map((.value - $g[0][.key]) | fabs <= 1e-4 * (1 + fabs)) | all')" = true ||
	{ echo "# want $(cat want.json)"; echo "# got  $(cat got.json)"; }
check "... and training moved it (margins differ from 0)" "$(jq '.["eval_rewards/margins"] != 0' got.json)" = true

expect "the same run without --eval" $D --max-steps 12 --metrics n.jsonl -o n pairs.mp
jq -c 'select(has("loss")) | del(.pairs_per_s)' e.jsonl >e.curve
jq -c 'del(.pairs_per_s)' n.jsonl >n.curve
same "evaluating leaves training alone: the same steps" e.curve n.curve
same "... and the same model" e/model.safetensors n/model.safetensors

# --keep best
expect "--keep best --eval-every 1" $D --max-steps 12 --eval eval.mp --eval-every 1 --keep best --metrics b.jsonl -o b pairs.mp
stderr_has "says which step it kept" "^seva-dpo: --keep best: the model of step [0-9]+ \\(eval_loss "
best=$(jq -s 'map(select(has("eval_loss"))) | min_by(.eval_loss) | .step' b.jsonl)
check "the last line names the step of the lowest eval_loss" \
	"$(tail -1 b.jsonl | jq --argjson s "$best" '.best_global_step == $s and (.best_metric | type) == "number"')" = true
check "... one before the last (the evaluation curve turns: $best)" "$best" -gt 0 -a "$best" -lt 12
expect "the run stopped at that step" $D --max-steps "$best" -o s pairs.mp
same "--keep best wrote the model of that step, bit for bit" b/model.safetensors s/model.safetensors
same "... its adapter too" b/adapter/adapter_model.safetensors s/adapter/adapter_model.safetensors
expect "--keep best:rewards/accuracies" $D --max-steps 12 --eval eval.mp --eval-every 1 --keep best:rewards/accuracies --metrics ba.jsonl -o ba pairs.mp
check "the highest accuracy, the earliest of equals" \
	"$(jq -s '(map(select(has("eval_loss"))) | (map(.["eval_rewards/accuracies"]) | max) as $m |
	map(select(.["eval_rewards/accuracies"] == $m)) | .[0].step) == (.[-1].best_global_step)' ba.jsonl)" = true
expect "--keep best, stopped after step 5" $D --max-steps 12 --eval eval.mp --eval-every 1 \
	--keep best --save-every 2 --stop-after 5 --metrics r.jsonl -o r pairs.mp
check "... the best so far beside the checkpoint" -f r.ckpt/best.bin
expect "... --resume" $D --max-steps 12 --eval eval.mp --eval-every 1 --keep best --save-every 2 --resume --metrics r.jsonl -o r pairs.mp
jq -c 'del(.pairs_per_s)' b.jsonl >b.curve
jq -c 'del(.pairs_per_s)' r.jsonl >r.curve
same "the resumed run logs what the uninterrupted one did" b.curve r.curve
same "... and keeps the same best model" b/model.safetensors r/model.safetensors

# --eval-split: by key alone
expect "--eval-split 0.25" $D --max-steps 2 --eval-split 0.25 --metrics sp.jsonl -o sp pairs.mp
stderr_has "says how many are held out" "^seva-dpo: --eval-split 0.25: [0-9]+ of 16 pairs held out for evaluation"
held=$(sed -n 's/.*0.25: \([0-9]*\) of 16.*/\1/p' "$TMP/.err")
check "some held out, most not ($held)" "$held" -gt 0 -a "$held" -lt 8
expect "the input reversed" $D --max-steps 2 --eval-split 0.25 --metrics sr.jsonl -o sr rev.mp
stderr_has "the same count" "^seva-dpo: --eval-split 0.25: $held of 16 pairs held out"
check "the same held-out pairs: the same mean log-prob at step 0" \
	"$(jq -n --slurpfile a sp.jsonl --slurpfile b sr.jsonl '($a[0]["eval_logps/chosen"] - $b[0]["eval_logps/chosen"]) | fabs < 1e-6')" = true
expect "--eval-split 0.001: a small input holds out none" $D --max-steps 2 --eval-split 0.001 --keep best --metrics s0.jsonl -o s0 pairs.mp
stderr_has "says so and goes on" "^seva-dpo: --eval-split 0.001: none of the 16 pairs held out; no evaluation, the last step's model is written"
check "... training on all of them, no evaluation lines" "$(jq -s 'length == 2 and (map(has("loss")) | all)' s0.jsonl)" = true

# Usage
expect_fail "--keep best without held-out pairs" 2 $D --keep best -o z pairs.mp
stderr_has "says what it needs" "^seva-dpo: --keep best: needs --eval or --eval-split"
expect_fail "--keep worst" 2 $D --eval eval.mp --keep worst -o z pairs.mp
stderr_has "names the values" "^seva-dpo: --keep: not last, best or best:METRIC with METRIC one of eval_loss, "
expect_fail "--keep best:nosuch" 2 $D --eval eval.mp --keep best:nosuch -o z pairs.mp
expect_fail "--eval and --eval-split" 2 $D --eval eval.mp --eval-split 0.1 -o z pairs.mp
stderr_has "one or the other" "^seva-dpo: --eval PAIRS and --eval-split F: one or the other"
expect_fail "--eval-split 1" 2 $D --eval-split 1 -o z pairs.mp
stderr_has "names the range" "^seva-dpo: --eval-split: not a number in"
expect_fail "--eval-every 0" 2 $D --eval eval.mp --eval-every 0 -o z pairs.mp
expect_fail "--eval-every without held-out pairs" 2 $D --eval-every 3 -o z pairs.mp
expect_fail "--score --eval" 2 $D --score --eval eval.mp pairs.mp
check "nothing written" ! -e z
: >empty
expect_fail "an empty --eval file" 1 $D --eval empty -o z pairs.mp
stderr_has "says so" "^seva-dpo: empty: no pairs to evaluate on"
done_testing
