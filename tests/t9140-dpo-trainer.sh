#!/bin/bash
# One optimizer step of TRL 1.16's DPOTrainer against one step of seva-dpo,
# for every loss type the two share: the same transformers-written LLaVA
# model, the same pairs (seva-pair's --trl export, loaded with datasets), the
# same LoRA (TRL's LoraConfig is seva's adapter_config.json: r, alpha,
# dropout 0, the decoder's projections only, the projector in
# modules_to_save), the same reference model (TRL's ref_model, seva's
# --ref-model: another model, so that the log-ratios, the rewards and the
# loss are not the trivial ones of policy = reference), AdamW with the same
# betas and eps, a constant rate, no warm-up, no clipping. The loss, the
# rewards, the margins, the log-probs and grad_norm that TRL logs, and the
# adapter after the step (lora_A, lora_B, the projector), against seva's
# metrics file and its adapter_model.safetensors.
. "$(dirname "$0")/lib.sh"
need_venv
FIX=$TOP/tests/fixtures/transformers/llava-gqa-f32

# Generated answers on the fixture's photos, two questions each, as
# seva-generate writes them; seva-pair makes the pairs and TRL's export.
i=0
for f in "$FIX"/photo*.jpg; do
	for qa in "What is in the image?|A small photo of a thing.|Nothing." \
		"Describe the scene in detail.|A person stands near a tree.|There is a red circle and a blue square."; do
		IFS='|' read -r q c r <<<"$qa"
		i=$((i + 1))
		jq -nc --arg k "p$i" --arg b "$(base64 -w0 "$f")" --arg q "$q" --arg c "$c" --arg r "$r" \
			'{__key__: $k, jpg: {base64: $b}, json: {prompt: $q}, "response.txt": $c, "aug.response.txt": $r}'
	done
done >gen.jsonl
seva-cat gen.jsonl >gen.msgpack
expect "seva-pair writes the pairs and their TRL export" seva-pair -q --trl trl.jsonl --images img \
	-o pairs.msgpack gen.msgpack
N=$(wc -l <trl.jsonl)

# The reference: the fixture after one full fine-tuning step of seva-dpo on
# one pair (transformers loads such a model: t9060). Against it the start's
# margins are of both signs, one pair's positive: the accuracies say something.
expect "a reference model other than the policy's start" seva-dpo -j 1 -q -m "$FIX/model" -o ref --full \
	--lr 1e-2 --warmup-steps 0 --max-steps 1 -b 1 pairs.msgpack

# Shared settings. With eps 1e-2, near the gradient's elements, AdamW's first
# step lr g / (|g| + eps) follows g itself, not only its sign: the weights
# after the step then check the gradient element by element. (One step
# cannot tell the betas apart: bias correction makes the first step that
# whatever they are; they are given alike all the same.)
LR=1e-2 EPS=1e-2 R=4 ALPHA=8
# NAME | seva's --loss | TRL's loss_type | loss_weights | beta | label_smoothing
CASES='sigmoid|sigmoid|sigmoid|-|0.1|0
sigmoid_norm|sigmoid_norm|sigmoid_norm|-|0.1|0
ipo|ipo|ipo|-|0.1|0
hinge|hinge|hinge|-|0.1|0
robust|robust|robust|-|0.1|0.2
exo_pair|exo_pair|exo_pair|-|0.1|0.2
nca_pair|nca_pair|nca_pair|-|0.1|0
bco_pair|bco_pair|bco_pair|-|0.1|0
sppo_hard|sppo_hard|sppo_hard|-|0.1|0
aot|aot|aot|-|0.1|0.2
aot_unpaired|aot_unpaired|aot_unpaired|-|0.1|0.2
apo_zero|apo_zero|apo_zero|-|0.1|0
apo_down|apo_down|apo_down|-|0.1|0
sft|sft|sft|-|0.1|0
mix1|sigmoid:0.8,bco_pair:0.2,sft:1|sigmoid,bco_pair,sft|0.8,0.2,1|0.1|0
mix2|robust:1,aot:0.5,apo_zero:2,sigmoid_norm:0.25|robust,aot,apo_zero,sigmoid_norm|1,0.5,2,0.25|0.3|0.1
sigmoid_ls|sigmoid|sigmoid|-|0.1|0.2'

# seva's step for each case
mkdir -p seva trl
failed_runs=0
while IFS='|' read -r name loss types weights beta ls; do
	seva-dpo -j 1 -q -s 0 -m "$FIX/model" --ref-model ref -o "seva/$name" --metrics "seva/$name.jsonl" \
		--loss "$loss" --beta "$beta" --label-smoothing "$ls" --lora $R --lora-alpha $ALPHA \
		--lr $LR --schedule constant --warmup-steps 0 --adam-beta1 0.9 --adam-beta2 0.999 \
		--adam-eps $EPS --clip 1e6 --weight-decay 0 -b "$N" --max-steps 1 pairs.msgpack \
		2>"seva/$name.err" || { failed_runs=$((failed_runs + 1)); diag <"seva/$name.err"; }
done <<<"$CASES"
check "seva-dpo makes one step for each of the $(wc -l <<<"$CASES") cases" "$failed_runs" = 0

# TRL's step for each case, in one process
printf '%s\n' "$CASES" | jq -R -s --argjson lr $LR --argjson eps $EPS \
	--argjson n "$N" '{lr: $lr, adam_beta1: 0.9, adam_beta2: 0.999, adam_eps: $eps, max_grad_norm: 1e6,
	batch: $n,
	cases: [split("\n")[] | select(length > 0) | split("|") | {name: .[0], loss_type: (.[2] | split(",")),
		loss_weights: (if .[3] == "-" then null else (.[3] | split(",") | map(tonumber)) end),
		beta: (.[4] | tonumber), label_smoothing: (.[5] | tonumber)}]}' >cases.json
expect "TRL's DPOTrainer makes one step for each case (datasets loads the export)" \
	"$PY" "$TOP/tests/ref/trl_dpo_step.py" "$FIX/model" ref trl.jsonl seva/sigmoid/adapter \
	cases.json trl
grep -E '^[a-z_0-9]+: ' "$TMP/.err" | diag

# TRL's sequences are seva's: each row's ids (the image's run of tokens as
# one) are the template's prompt and the answer with its end of turn
seva-cat --jsonl pairs.msgpack >pairs.jsonl
jq -c '."prompt.txt"' pairs.jsonl >prompts.jsonl
jq -c '."chosen.txt"' pairs.jsonl >chosen.jsonl
jq -c '."rejected.txt"' pairs.jsonl >rejected.jsonl
seva-tok --template --ids "$FIX/model" prompts.jsonl >p.ids
seva-tok --eos "$FIX/model/tokenizer.json" chosen.jsonl >c.ids
seva-tok --eos "$FIX/model/tokenizer.json" rejected.jsonl >r.ids
expect "TRL's rows are seva's prompt and answer ids, the image's run as long as seva's" "$PY" - <<EOF
import json, sys
cfg = json.load(open("$FIX/model/config.json"))
img, pad = cfg["image_token_index"], cfg["text_config"]["pad_token_id"]
n_img = (cfg["vision_config"]["image_size"] // cfg["vision_config"]["patch_size"]) ** 2
rd = lambda p: [json.loads(l) for l in open(p)]
p, c, r = rd("p.ids"), rd("c.ids"), rd("r.ids")
t = json.load(open("trl/sigmoid.json"))["input_ids"]
def seva_view(row):
    while row and row[-1] == pad:
        row = row[:-1]
    k = row.index(img)
    if row[k:k + n_img] != [img] * n_img or img in row[k + n_img:]:
        sys.exit("the image's run is not %d tokens: %s" % (n_img, row))
    return row[:k + 1] + row[k + n_img:]
n = len(t) // 2
for half, ans in ((t[:n], c), (t[n:], r)):
    want = sorted(a + b for a, b in zip(p, ans))
    got = sorted(seva_view(x) for x in half)
    if got != want:
        sys.exit("TRL's rows:\n%s\nseva's:\n%s" % (got, want))
EOF

# The numbers. Tolerances, from f32 arithmetic on both sides: a summed
# log-prob (some 10 to 40 answer tokens, each a log-softmax over 542 logits
# after 2 decoder layers, ~60 in size) within 1e-4, ~2e-6 relative (t9060's
# bound for the same model, the measured differences ~1e-5); a reward,
# beta times the difference of two of them, within 2e-4 beta; the loss within
# 1e-5 (1 + its size) and grad_norm within 1e-5 relative, where each case
# differs by ~1e-7 relative. A weight after the step: the step's change is
# lr g / (|g| + eps), whose derivative in g is at most lr / eps, and a
# gradient element's error is some 1e-6 of grad_norm (f32, as grad_norm's
# own), so within 1e-6 lr max(1, grad_norm) / eps (1e-4 lr for the losses
# whose grad_norm is below 1; measured ~3e-6 lr); lora_A exactly where it
# was (B starts at 0, so its gradient is 0).
cat >compare.py <<'EOF'
import json, sys
from safetensors.torch import load_file
lr, eps = float(sys.argv[1]), float(sys.argv[2])
cases = json.load(open("cases.json"))["cases"]
for c in cases:
    name, beta, ls = c["name"], c["beta"], c["label_smoothing"]
    s = [json.loads(l) for l in open("seva/%s.jsonl" % name)][0]
    t = json.load(open("trl/%s.json" % name))["logs"]
    if name == "sigmoid_ls":
        # the documented convention (seva-dpo(1), sigmoid): TRL 1.16 drops
        # label smoothing from sigmoid, seva keeps conservative DPO:
        # -(1-e) log s(bz) - e log s(-bz) = -log s(bz) + e bz, so seva's loss
        # is TRL's plus e times the mean margin, both as TRL logged them
        t0 = json.load(open("trl/sigmoid.json"))["logs"]
        d = abs(t["loss"] - t0["loss"])
        print("%s %s: TRL 1.16 ignores label smoothing for sigmoid (its loss at e = %g differs by %.2g from e = 0)"
              % ("PASS" if d < 1e-7 else "FAIL", name, ls, d))
        want = t["loss"] + ls * t["rewards/margins"]
        d = abs(s["loss"] - want)
        print("%s %s: seva's conservative DPO loss %.9g is TRL's %.9g + e x margins %.9g (difference %.2g)"
              % ("PASS" if d < 1e-5 * (1 + abs(want)) else "FAIL", name, s["loss"], t["loss"],
                 t["rewards/margins"], d))
        continue
    bad, worst = [], []
    def near(key, tol):
        d = abs(s[key] - t[key])
        worst.append("%s %.2g" % (key, d))
        if not d <= tol:
            bad.append("%s: seva %.9g, TRL %.9g, differ by %.3g > %.3g" % (key, s[key], t[key], d, tol))
    for k in ("logps/chosen", "logps/rejected"):
        near(k, 1e-4)
    for k in ("rewards/chosen", "rewards/rejected", "rewards/margins"):
        near(k, 2e-4 * beta)
    near("rewards/accuracies", 1e-6)  # TRL's f32 of k/N; one pair more or less is 1/N
    near("loss", 1e-5 * (1 + abs(t["loss"])))
    near("grad_norm", 1e-5 * t["grad_norm"])
    print("%s %s: loss %.6g, grad_norm %.6g, margins %.4g; differences %s%s" % (
        "FAIL" if bad else "PASS", name, t["loss"], t["grad_norm"], t["rewards/margins"],
        ", ".join(worst), "".join("\n# " + b for b in bad)))
    sa = load_file("seva/%s/adapter/adapter_model.safetensors" % name)
    ta = load_file("trl/%s.safetensors" % name)
    bad, wd, n = [], 0.0, 0
    if set(sa) != set(ta):
        bad.append("tensors only in seva's: %s; only in TRL's: %s" % (sorted(set(sa) - set(ta)),
                                                                  sorted(set(ta) - set(sa))))
    for k in sorted(set(sa) & set(ta)):
        d = (sa[k].double() - ta[k].double()).abs().max().item()
        n += 1
        tol = 0.0 if ".lora_A." in k else 1e-6 * lr * max(1.0, t["grad_norm"]) / eps
        wd = max(wd, d / lr)
        if not d <= tol:
            bad.append("%s: differs by %.3g > %.3g" % (k, d, tol))
    print("%s %s: the adapter after the step, %d tensors (projector included), max difference %.2g lr%s" % (
        "FAIL" if bad or n < 10 else "PASS", name, n, wd, "".join("\n# " + b for b in bad)))
EOF
"$PY" compare.py $LR $EPS >cmp.txt 2>cmp.err || { cat cmp.err | diag; }
while read -r verdict rest; do
	case $verdict in
	PASS) ok "$rest" ;;
	FAIL) not_ok "$rest" ;;
	*) echo "$verdict $rest" ;;
	esac
done <cmp.txt
check "every case compared: losses, then adapters" "$(grep -c '^PASS\|^FAIL' cmp.txt)" = \
	$((2 * $(wc -l <<<"$CASES")))
echo "# not compared: dpop, mdpo_cond and mdpo_anchor (not TRL losses) and --reference-free (TRL 1.16 has no reference_free)"
done_testing
