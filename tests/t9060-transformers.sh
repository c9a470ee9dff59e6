#!/bin/bash
# Round trip with transformers itself (the venv tests/deps.sh makes): a LLaVA
# directory written by LlavaForConditionalGeneration.save_pretrained goes
# through generate, pair and DPO (full and LoRA, merged); transformers'
# from_pretrained then loads what seva wrote, with no missing or unexpected
# weight, and gives the summed log-probs that seva-dpo --score gives.
. "$(dirname "$0")/lib.sh"
need_venv
FIX=$TOP/tests/fixtures/transformers/llava-gqa-f32

# Pairs from the fixture's real photos: questions, answers on two views.
for f in "$FIX"/photo*.jpg; do
	k=$(basename "$f" .jpg | tr -- '-' '_')
	printf '{"__key__":"%s","jpg":{"base64":"%s"},"json":{"prompt":"What is in the image?"}}\n' \
		"$k" "$(base64 -w0 "$f")"
done >in.jsonl
seva-cat in.jsonl >in.msgpack
expect "augment" seva-augment -q -r diffusion:t=800 -o aug.msgpack in.msgpack
expect "generate on the transformers-written model" seva-generate -q -m "$FIX/model" --max-new-tokens 6 \
	-o gen.msgpack aug.msgpack
expect "pair (answers of a random model differ)" seva-pair -q -o pairs.msgpack gen.msgpack
seva-cat --jsonl pairs.msgpack >pairs.jsonl
check "pairs to train on" "$(wc -l <pairs.jsonl)" -ge 2

expect "DPO, full fine-tuning" seva-dpo -q -m "$FIX/model" -o full --full --lr 1e-2 --max-steps 2 -b 2 pairs.msgpack
expect "DPO, LoRA (merged model written)" seva-dpo -q -m "$FIX/model" -o lora --lora 4 --lr 1e-2 --max-steps 2 \
	-b 2 pairs.msgpack

# transformers scores the chosen and rejected answers independently of seva
# (tests/ref/llava_answer_logps.py); seva-dpo --score must agree.
cat >score.py <<'EOF'
import json, sys, torch
from transformers import LlavaForConditionalGeneration, AutoProcessor
from llava_answer_logps import answer_logps
model_dir, fixture, pairs = sys.argv[1:4]
model, info = LlavaForConditionalGeneration.from_pretrained(model_dir, dtype=torch.float32,
                                                            output_loading_info=True)
if any(info.get(k) for k in ("missing_keys", "unexpected_keys", "mismatched_keys")):
    print("loading info:", info, file=sys.stderr); sys.exit(3)
json.dump(answer_logps(model, model.config, AutoProcessor.from_pretrained(fixture), pairs), sys.stdout)
EOF
seva-cat --jsonl --base64 pairs.msgpack >pairs.b64.jsonl
for m in full lora; do
	expect "$m: transformers loads the model seva wrote (no missing, unexpected or mismatched weight)" \
		env PYTHONPATH="$TOP/tests/ref" "$PY" score.py $m "$FIX/model" pairs.b64.jsonl
	cp .out $m.hf.json
	expect "$m: seva-dpo --score on it" seva-dpo --score -q -m $m -o $m.scored.msgpack pairs.msgpack
	seva-cat --jsonl $m.scored.msgpack | jq -c '{(.__key__): ."ref.json"}' | jq -s 'add' >$m.seva.json
	expect "$m: seva's summed log-probs equal transformers' (within 1e-4 each)" jq -e -n \
		--slurpfile h $m.hf.json --slurpfile s $m.seva.json '
		[$h[0] | to_entries[] | .key as $k | .value | to_entries[] |
		 (.value - $s[0][$k][.key]) | fabs] | length >= 4 and max < 1e-4'
	jq -n --slurpfile h $m.hf.json --slurpfile s $m.seva.json '[$h[0], $s[0]]' | diag
done
check "the trained models differ from the base (training did something)" \
	"$(cmp -s full/model.safetensors "$FIX/model/model.safetensors" && echo same)" = ""
done_testing
