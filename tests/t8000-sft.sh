#!/bin/bash
# seva-sft: training lowers the loss, metrics, resume continues the same
# trajectory bit for bit, SIGTERM leaves a resumable checkpoint, a NaN stops
# the run with the last good checkpoint intact, LoRA, conversations, bad input.
. "$(dirname "$0")/lib.sh"
PY=/usr/bin/python3
FIX=$TOP/tests/fixtures/train

tiny_base base
seva-synth --split sft -n 24 -s 5 >sft.mp
T="seva-sft -j 1 -m base -b 4 --lr 3e-3 --warmup-ratio 0.1 -s 9"

expect "trains 2 epochs" $T --epochs 2 --metrics m.jsonl -o a sft.mp
check "12 steps logged" "$(wc -l <m.jsonl)" = 12
check "metrics have step, epoch, loss, lr, grad_norm, tokens_per_s" \
	"$(jq -s 'map(has("step") and has("epoch") and has("loss") and has("lr") and has("grad_norm") and has("tokens_per_s")) | all' m.jsonl)" = true
check "the loss falls (mean of the last 3 steps below the first)" \
	"$(jq -s '(.[-3:] | map(.loss) | add / 3) < .[0].loss' m.jsonl)" = true
check "warm-up then cosine: lr 0 at step 1, peak at step 3 (ceil(0.1*12) = 2 warm-up steps)" \
	"$(jq -s '.[0].lr == 0 and .[2].lr == 0.003 and .[11].lr < .[2].lr' m.jsonl)" = true
check "the model directory is written" -f a/model.safetensors -a -f a/tokenizer.json

# Resume: stop after 5 of 12 steps, continue; same curve and same weights.
expect "uninterrupted run with checkpoints" $T --epochs 2 --save-every 4 --metrics u.jsonl -o u sft.mp
expect "--stop-after 5 exits 0" $T --epochs 2 --save-every 4 --stop-after 5 --metrics r.jsonl -o r sft.mp
check "a checkpoint of step 5" "$(jq .step r.ckpt/state.json)" = 5
check "no final model yet" ! -e r/model.safetensors
expect "--resume" $T --epochs 2 --save-every 4 --resume --metrics r.jsonl -o r sft.mp
jq -c 'del(.tokens_per_s)' u.jsonl >u.curve
jq -c 'del(.tokens_per_s)' r.jsonl >r.curve
same "resumed loss curve equals the uninterrupted one bit for bit" u.curve r.curve
same "resumed weights equal the uninterrupted ones" u/model.safetensors r/model.safetensors
expect_fail "resume with other settings is refused" 1 $T --epochs 2 --lr 1e-3 --resume -o r sft.mp
stderr_has "the message says the settings differ" "other settings"

# SIGTERM: a checkpoint at the step boundary, exit 1, and the run resumes.
$T --max-steps 100000 --metrics s.jsonl -o s sft.mp 2>s.err &
pid=$!
for i in $(seq 1 300); do [ -s s.jsonl ] && break; sleep 0.1; done
kill -TERM $pid
wait $pid
rc=$?
check "SIGTERM: exit 1" $rc = 1
grep -q "interrupted by signal 15.*--resume" s.err && ok "SIGTERM: message says how to resume" ||
	{ not_ok "SIGTERM: message says how to resume"; diag <s.err; }
check "SIGTERM: checkpoint at the last finished step" \
	"$(jq .step s.ckpt/state.json)" = "$(tail -1 s.jsonl | jq .step)"
expect "the interrupted run resumes" $T --max-steps 100000 --resume --stop-after 1 -o s sft.mp
check "and goes on from there" "$(jq .step s.ckpt/state.json)" -gt "$(tail -1 s.jsonl | jq .step)"

# NaN: poison the embedding of a word some answers use; the decoder is frozen,
# so the first step whose batch holds that word has a NaN loss.
cp -r base poison
$PY - poison/model.safetensors tok.json <<'PY'
import json, struct, sys
path, tok = sys.argv[1], json.load(open(sys.argv[2]))
raw = open(path, "rb").read()
n = struct.unpack("<Q", raw[:8])[0]
head = json.loads(raw[8:8 + n])
t = head["language_model.model.embed_tokens.weight"]
assert t["dtype"] == "F32"
row = tok["model"]["vocab"]["circle"]
C = t["shape"][1]
off = 8 + n + t["data_offsets"][0] + row * C * 4
raw = bytearray(raw)
raw[off:off + 4 * C] = struct.pack("<f", float("nan")) * C
open(path, "wb").write(raw)
PY
expect_fail "a NaN loss stops the run" 1 seva-sft -j 1 -m poison -b 1 --train projector --save-every 1 \
	--max-steps 24 -s 2 --metrics n.jsonl -o n sft.mp
stderr_has "the message names the step and the last good checkpoint" "loss is nan.*last good checkpoint"
good=$(wc -l <n.jsonl)
check "some steps ran before the NaN" "$good" -gt 0
check "the checkpoint is the last good step" "$(jq .step n.ckpt/state.json)" = "$good"
check "no model written" ! -e n/model.safetensors

# LoRA, bf16, conversations
expect "LoRA" $T --lora 4 --max-steps 2 --dtype bf16 -o l sft.mp
check "LoRA: PEFT adapter beside the merged model" -f l/adapter/adapter_config.json -a \
	-f l/adapter/adapter_model.safetensors -a -f l/model.safetensors
check "bf16 weights" "$(head -c 4000 l/model.safetensors | grep -c BF16)" -ge 1
$PY - sft.mp conv.mp bad.mp badimg.mp allbad.mp <<'PY'
import msgpack, sys
s = list(msgpack.Unpacker(open(sys.argv[1], "rb"), raw=False))
a, b = s[0]["json"], s[1]["json"]
conv = {"__key__": "conv", "png": s[0]["png"], "json": {"conversations": [
    {"from": "human", "value": "<image>\n" + a["prompt"]}, {"from": "gpt", "value": a["answer"]},
    {"from": "human", "value": b["prompt"]}, {"from": "gpt", "value": b["answer"]}]}}
open(sys.argv[2], "wb").write(msgpack.packb(conv, use_bin_type=True) + msgpack.packb(s[2], use_bin_type=True))
noans = {"__key__": "noans", "png": s[0]["png"], "json": {"prompt": "What is it?"}}
open(sys.argv[3], "wb").write(b"".join(msgpack.packb(x, use_bin_type=True) for x in [s[3], noans, s[4]]))
badimg = dict(s[5], __key__="badimg", png=b"not an image")
open(sys.argv[4], "wb").write(b"".join(msgpack.packb(x, use_bin_type=True) for x in [s[3], badimg]))
open(sys.argv[5], "wb").write(b"".join(msgpack.packb(x, use_bin_type=True) for x in [badimg, noans]))
PY
expect "multi-turn LLaVA conversations train" $T --max-steps 1 -o c conv.mp
# --loss-per turn: a long and a short answer weigh the same. With lr 0 the
# first step's loss is the model's: the batch of both is the mean of each
# alone, where the per-token mean leans to the long one.
$PY - sft.mp long.mp short.mp both.mp <<'PY'
import msgpack, sys
s = list(msgpack.Unpacker(open(sys.argv[1], "rb"), raw=False))
by_len = sorted(s, key=lambda r: len(r["json"]["answer"].split()))
short, long_ = by_len[0], by_len[-1]
for path, recs in ((sys.argv[2], [long_]), (sys.argv[3], [short]), (sys.argv[4], [long_, short])):
    open(path, "wb").write(b"".join(msgpack.packb(r, use_bin_type=True) for r in recs))
PY
Z="seva-sft -j 1 -m base -b 2 --lr 0 --max-steps 1"
for f in long short; do $Z --metrics $f.jsonl -o z$f $f.mp 2>/dev/null; done
expect "--loss-per turn" $Z --loss-per turn --metrics turn.jsonl -o zt both.mp
expect "--loss-per token" $Z --loss-per token --metrics token.jsonl -o zk both.mp
lu=$(jq .loss turn.jsonl) lt=$(jq .loss token.jsonl) la=$(jq .loss long.jsonl) lb=$(jq .loss short.jsonl)
check "per turn: the mean of the two answers' losses ($lu vs ($la + $lb) / 2)" \
	"$(jq -n "($lu - ($la + $lb) / 2) | fabs < 1e-6 * $lu")" = true
check "per token: not that mean, nearer the long answer's ($lt)" \
	"$(jq -n "(($lt - $la) | fabs) < (($lu - $la) | fabs)")" = true
check "per turn: the rate is in turns_per_s" "$(jq 'has("turns_per_s")' turn.jsonl)" = true
expect_fail "--loss-per sentence: usage" 2 $Z --loss-per sentence -o x both.mp
stderr_has "names the option and its values" "^seva-sft: --loss-per: not token or turn: 'sentence'"
expect_fail "a sample without an answer fails" 1 $T --max-steps 1 -o b bad.mp
stderr_has "the message names the record and key" "record 2.*noans.*answer"
expect_fail "an image that does not decode fails" 1 $T --max-steps 1 -o b badimg.mp
stderr_has "the message names the record, key and field" "^seva-sft: badimg.mp: record 2 \\(key badimg\\): field 'png': cannot decode image: not a JPEG or PNG image"
expect_fail "-k skips it, trains, exits 3" 3 $T -k --max-steps 1 -o k bad.mp
stderr_has "-k reports the count" "^seva-sft: 1 of 3 samples skipped"
stderr_has "-k: WHERE: WHY (skipped)" "^seva-sft: bad.mp: record 2 \\(key noans\\): .*answer.* \\(skipped\\)\$"
check "-k still writes the model" -f k/model.safetensors
expect_fail "-k: a missing file is passed over, counted, exit 3" 3 $T -k --max-steps 1 -o k2 nosuch.mp conv.mp
stderr_has "... counted" "^seva-sft: 1 input could not be read"
check "... after training on the other file" -f k2/model.safetensors
: >empty
expect_fail "empty input: nothing to train" 1 $T -o e empty
stderr_has "says why" "^seva-sft: no training examples: the input is empty, nothing to train on"
expect_fail "every sample skipped: nothing to train" 1 $T -k -o e allbad.mp
stderr_has "counts them" "^seva-sft: 2 of 2 samples skipped"
stderr_has "says why" "^seva-sft: no training examples: every sample was skipped, nothing to train on"
expect_fail "no -o: usage" 2 seva-sft -m base sft.mp
expect_fail "--config without --tokenizer: usage" 2 seva-sft --config "$FIX/tiny-config.json" -o x
expect_fail "unknown part: usage" 2 $T --train brain -o x sft.mp
expect_fail "unknown schedule: usage" 2 $T --schedule cosin -o x sft.mp
stderr_has "names the option and its values" "^seva-sft: --schedule: not constant, linear or cosine: 'cosin'"
expect_fail "unknown dtype: usage" 2 $T --dtype fp16 -o x sft.mp
stderr_has "names the option and its values" "^seva-sft: --dtype: not f32 or bf16: 'fp16'"
# --vision-labels: the vision tower alone learns which objects an image holds.
seva-synth --split sft -n 16 -s 6 >vis.mp
V="seva-sft -j 1 -m base -b 4 --lr 3e-3 -s 9 --vision-labels"
expect "--vision-labels trains" $V --epochs 8 --metrics v.jsonl -o v vis.mp
check "metrics have loss and accuracy per (image, label), labels_per_s" \
	"$(jq -s 'map(has("loss") and has("accuracy") and has("labels_per_s")) | all' v.jsonl)" = true
check "the loss falls (last 4 steps' mean below the first 4's)" \
	"$(jq -s '(.[-4:] | map(.loss) | add) < (.[:4] | map(.loss) | add)' v.jsonl)" = true
$PY - base/model.safetensors v/model.safetensors >vdiff.txt <<'PY'
import json, struct, sys
def load(p):
    raw = open(p, "rb").read(); n = struct.unpack("<Q", raw[:8])[0]; h = json.loads(raw[8:8 + n])
    return {k: raw[8 + n + v["data_offsets"][0]:8 + n + v["data_offsets"][1]] for k, v in h.items() if k != "__metadata__"}
a, b = load(sys.argv[1]), load(sys.argv[2])
print(sum(a[k] != b[k] for k in a if k.startswith("vision_tower.")), sum(a[k] != b[k] for k in a if not k.startswith("vision_tower.")))
PY
check "only vision tensors changed ($(cat vdiff.txt): vision, other)" "$(cut -d' ' -f2 vdiff.txt)" = 0 -a "$(cut -d' ' -f1 vdiff.txt)" -gt 5
expect "resumable like any run" $V --epochs 8 --stop-after 3 --save-every 2 -o vr vis.mp
expect "... and resumed" $V --epochs 8 --save-every 2 --resume -o vr vis.mp
same "resumed weights equal the uninterrupted ones" v/model.safetensors vr/model.safetensors
expect_fail "--vision-labels with --train decoder: usage" 2 $V --train decoder -o x vis.mp
stderr_has "says why" "trains the vision tower alone"
expect_fail "--vision-labels with --lora: usage" 2 $V --lora 4 -o x vis.mp
# --vision-attributes: an object with a colour is also the label "COLOR SHAPE".
# The same images with those labels spelled out as strings train to the same bytes.
$PY - vis.mp >vis-str.mp <<'PY'
import sys, msgpack
out = sys.stdout.buffer
for r in msgpack.Unpacker(open(sys.argv[1], "rb"), raw=False):
    labels = []
    for o in r["json"]["objects"]:
        labels += [o["shape"], o["color"] + " " + o["shape"]]
    r["json"]["objects"] = labels
    out.write(msgpack.packb(r, use_bin_type=True))
PY
expect "--vision-attributes trains" $V --vision-attributes --max-steps 3 -o va vis.mp
expect "... as the labels spelled out do" $V --max-steps 3 -o vs vis-str.mp
same "colour+shape labels are exactly \"COLOR SHAPE\"" va/model.safetensors vs/model.safetensors
expect "without it the colour labels are not there" $V --max-steps 3 -o vn vis.mp
check "... and the weights differ" "$(cmp -s va/model.safetensors vn/model.safetensors && echo same)" = ""
expect "strings carry no colour: --vision-attributes changes nothing" $V --vision-attributes --max-steps 3 -o vs2 vis-str.mp
same "... bit for bit" vs/model.safetensors vs2/model.safetensors
expect_fail "--vision-attributes without --vision-labels: usage" 2 seva-sft -m base --vision-attributes -o x vis.mp
stderr_has "says why" "adds labels to --vision-labels"
expect_fail "a sample without json.objects fails" 1 $V --max-steps 1 -o x conv.mp
stderr_has "names the record and the missing field" "record 1 .*no json.objects"
done_testing
