#!/bin/bash
# The adapter seva-dpo writes, loaded by PEFT itself (the venv tests/deps.sh
# makes): PeftModel.from_pretrained over transformers' LlavaForConditionalGeneration
# on the fixture model, with the projector from modules_to_save and rsLoRA's
# scale from use_rslora, gives the log-probs seva computes with the model it
# merged (seva-dpo --score), and PEFT's merge_and_unload gives its weights.
. "$(dirname "$0")/lib.sh"
need_venv
FIX=$TOP/tests/fixtures/transformers/llava-gqa-f32

# pairs from the fixture's photos, with answers of other lengths
for f in "$FIX"/photo*.jpg; do
	k=$(basename "$f" .jpg | tr -- '-' '_')
	printf '{"__key__":"%s","jpg":{"base64":"%s"},"prompt.txt":"What is in the image?","chosen.txt":"A small photo of %s.","rejected.txt":"Nothing."}\n' \
		"$k" "$(base64 -w0 "$f")" "$k"
done >pairs.b64.jsonl
seva-cat pairs.b64.jsonl >pairs.msgpack

D="seva-dpo -j 1 -q -m $FIX/model --lr 1e-2 --max-steps 3 -b 2 --lora 4 --lora-alpha 8"
expect "DPO with LoRA, the projector trained beside it" $D -o plain pairs.msgpack
expect "... with --use-rslora and --lora-dropout 0.05" $D --use-rslora --lora-dropout 0.05 -o rs pairs.msgpack

cat >peft_score.py <<'EOF'
import json, sys, torch
from transformers import LlavaForConditionalGeneration, AutoProcessor
from peft import PeftModel
from llava_answer_logps import answer_logps
base_dir, adapter, pairs, merged_out = sys.argv[1:5]
base = LlavaForConditionalGeneration.from_pretrained(base_dir, dtype=torch.float32)
model = PeftModel.from_pretrained(base, adapter)
model.eval()
cfg = model.peft_config["default"]
print("peft config: r %d, alpha %g, use_rslora %s, dropout %g, modules_to_save %s" % (
    cfg.r, cfg.lora_alpha, cfg.use_rslora, cfg.lora_dropout, sorted(cfg.modules_to_save or [])),
    file=sys.stderr)
json.dump(answer_logps(model, base.config, AutoProcessor.from_pretrained(base_dir), pairs), sys.stdout)
# PEFT's own merge, for the weights
merged = model.merge_and_unload()
torch.save({k: v.detach().clone() for k, v in merged.state_dict().items()}, merged_out)
EOF

cat >weights.py <<'EOF'
import json, struct, sys, torch
ref = torch.load(sys.argv[1])
d = open(sys.argv[2], "rb").read(); n = struct.unpack("<Q", d[:8])[0]; h = json.loads(d[8:8 + n])
import numpy as np
worst, seen = 0.0, 0
def hf_name(k):  # seva writes the language_model.model.* layout
    for a, b in (("language_model.model.", "model.language_model."), ("language_model.lm_head.", "lm_head."),
                 ("vision_tower.vision_model.", "model.vision_tower."),
                 ("multi_modal_projector.", "model.multi_modal_projector.")):
        if k.startswith(a):
            return b + k[len(a):]
    return k
for k, v in h.items():
    if k == "__metadata__":
        continue
    a, b = v["data_offsets"]
    x = torch.from_numpy(np.frombuffer(d[8 + n + a:8 + n + b], dtype=np.float32).reshape(v["shape"]).copy())
    r = ref.get(k, ref.get(hf_name(k)))
    if r is None:
        print("no tensor", k, "in PEFT's merged model", file=sys.stderr); sys.exit(2)
    worst = max(worst, (x.double() - r.double()).abs().max().item()); seen += 1
print(seen, worst)
EOF

for m in plain rs; do
	expect "$m: PeftModel.from_pretrained loads seva's adapter and scores the pairs" \
		env PYTHONPATH="$TOP/tests/ref" "$PY" peft_score.py "$FIX/model" $m/adapter pairs.b64.jsonl $m.merged.pt
	cp "$TMP/.out" $m.peft.json
	grep "^peft config" "$TMP/.err" | diag
	expect "$m: seva-dpo --score with the model seva merged" seva-dpo --score -q -m $m -o $m.scored.msgpack pairs.msgpack
	seva-cat --jsonl $m.scored.msgpack | jq -c '{(.__key__): ."ref.json"}' | jq -s 'add' >$m.seva.json
	expect "$m: PEFT's log-probs (base + adapter) equal seva's (within 1e-4 each)" jq -e -n \
		--slurpfile h $m.peft.json --slurpfile s $m.seva.json '
		[$h[0] | to_entries[] | .key as $k | .value | to_entries[] |
		 (.value - $s[0][$k][.key]) | fabs] | length >= 6 and max < 1e-4'
	jq -n --slurpfile h $m.peft.json --slurpfile s $m.seva.json '[$h[0], $s[0]]' | diag
	read seen worst < <("$PY" weights.py $m.merged.pt $m/model.safetensors 2>w.err)
	if [ "$("$PY" -c "print(${seen:-0} > 10 and ${worst:-1} < 1e-5)")" = True ]; then
		ok "$m: PEFT's merge_and_unload gives seva's merged weights ($seen tensors, max difference $worst)"
	else
		not_ok "$m: PEFT's merge_and_unload gives seva's merged weights (${seen:-?} tensors, max difference ${worst:-?})"
		diag <w.err
	fi
done
# the adapters differ: a PEFT that ignored use_rslora (or the projector)
# would not reproduce both
if cmp -s plain.peft.json rs.peft.json; then not_ok "the two adapters score differently"
else ok "the two adapters score differently"; fi
done_testing
