#!/bin/bash
# PEFT's and LLaVA's adapter options in both trainers: --use-rslora (scale
# α/√r), --lora-dropout (masks drawn from the seed, the step and the example,
# so a resumed run is the same run bit for bit), --projector-lr (LLaVA's
# mm_projector_lr; 0 is SeVa's script). The gradients are checked against
# finite differences in test_vlm; here the tools and their files.
. "$(dirname "$0")/lib.sh"
PY=/usr/bin/python3
FIX=$TOP/tests/fixtures/train

tiny_base base
seva-synth --split sft -n 8 -s 2 >sft.mp
sft_pairs sft.mp pairs.mp

# bad values and combinations: exit 2 naming the option
for t in sft dpo; do
	for bad in "--lora-dropout 1" "--lora-dropout -0.1" "--lora-dropout x" \
		"--projector-lr -1" "--projector-lr x"; do
		set -- $bad
		expect_fail "seva-$t $bad: usage error" 2 seva-$t -m base -o x --lora 4 $bad sft.mp
		stderr_has "seva-$t $bad: names $1 and its range" "^seva-$t: $1: not a.* in \["
	done
	expect_fail "seva-$t --projector-lr with a frozen projector" 2 \
		seva-$t -q -m base -o x --lora 4 --train decoder --projector-lr 0 sft.mp
	stderr_has "... names --projector-lr" "^seva-$t: --projector-lr: the projector does not train"
done
for o in "--use-rslora" "--lora-dropout 0.1"; do
	expect_fail "seva-dpo --full $o: usage error" 2 seva-dpo -q -m base -o x --full $o pairs.mp
	stderr_has "... names ${o%% *}" "^seva-dpo: ${o%% *}: shapes LoRA adapters"
	expect_fail "seva-sft $o without --lora: usage error" 2 seva-sft -q -m base -o x $o sft.mp
	stderr_has "... names ${o%% *}" "^seva-sft: ${o%% *}: shapes LoRA adapters"
done

# The adapter as PEFT reads it: W + scale · B A, scale α/r or α/√r with
# use_rslora, modules_to_save replaced; against the merged model seva wrote.
check_merge() {
	$PY - base/model.safetensors "$1/adapter/adapter_model.safetensors" "$1/model.safetensors" \
		"$1/adapter/adapter_config.json" <<'PY'
import json, math, struct, sys
import numpy as np
def load(p):
    d = open(p, "rb").read(); n = struct.unpack("<Q", d[:8])[0]; h = json.loads(d[8:8 + n])
    return {k: np.frombuffer(d[8 + n + v["data_offsets"][0]:8 + n + v["data_offsets"][1]],
                             dtype=np.float32).reshape(v["shape"]).astype(np.float64)
            for k, v in h.items() if k != "__metadata__"}
base, ad, merged = load(sys.argv[1]), load(sys.argv[2]), load(sys.argv[3])
cfg = json.load(open(sys.argv[4]))
scale = cfg["lora_alpha"] / (math.sqrt(cfg["r"]) if cfg.get("use_rslora") else cfg["r"])
P = "base_model.model."
# the adapter names modules as transformers 5 does, the model file keeps
# llava-hf's older layout
LAYOUT = (("model.vision_tower.", "vision_tower.vision_model."), ("model.multi_modal_projector.",
          "multi_modal_projector."), ("model.language_model.", "language_model.model."),
          ("lm_head.", "language_model.lm_head."))
def name(k):
    k = k[len(P):]
    return next((b + k[len(a):] for a, b in LAYOUT if k.startswith(a)), k)
model = dict(base)
for k in ad:
    if "lora_" not in k:
        model[name(k)] = ad[k]
for k in ad:
    if k.endswith("lora_A.weight"):
        w = name(k).replace(".lora_A.weight", ".weight")
        model[w] = model[w] + scale * ad[k.replace("lora_A", "lora_B")] @ ad[k]
print(max(np.abs(model[k] - merged[k]).max() for k in merged))
PY
}
# the largest change of the projector's tensors from the base
proj_moved() {
	$PY - base/model.safetensors "$1/model.safetensors" <<'PY'
import json, struct, sys
import numpy as np
def load(p):
    d = open(p, "rb").read(); n = struct.unpack("<Q", d[:8])[0]; h = json.loads(d[8:8 + n])
    return {k: np.frombuffer(d[8 + n + v["data_offsets"][0]:8 + n + v["data_offsets"][1]],
                             dtype=np.float32).reshape(v["shape"])
            for k, v in h.items() if k != "__metadata__"}
a, b = load(sys.argv[1]), load(sys.argv[2])
print(max(float(np.abs(a[k] - b[k]).max()) for k in a if "multi_modal_projector" in k))
PY
}

D="seva-dpo -j 1 -q -m base -b 2 --lr 1e-2 --max-steps 4 --lora 4 --lora-alpha 8"
expect "seva-dpo --use-rslora" $D --use-rslora -o rs pairs.mp
expect "seva-dpo without" $D -o plain pairs.mp
check "adapter_config.json: use_rslora true, lora_dropout 0" \
	"$(jq -c '[.use_rslora, .lora_dropout, .r, .lora_alpha]' rs/adapter/adapter_config.json)" = '[true,0,4,8]'
check "... false without it" "$(jq -c .use_rslora plain/adapter/adapter_config.json)" = false
worst=$(check_merge rs)
check "rsLoRA: base + adapter at α/√r = the merged model (max difference $worst)" \
	"$($PY -c "print($worst < 1e-6)")" = True
if cmp -s rs/model.safetensors plain/model.safetensors; then not_ok "rsLoRA trains another model"
else ok "rsLoRA trains another model"; fi
check "training_args.json records use_rslora" "$(jq -c .use_rslora rs/training_args.json)" = true

expect "seva-dpo --lora-dropout 0.05 (SeVa's and LLaVA's)" $D --lora-dropout 0.05 -o dr pairs.mp
check "adapter_config.json: lora_dropout 0.05" \
	"$(jq -c .lora_dropout dr/adapter/adapter_config.json)" = 0.05
check "... training_args.json too" "$(jq -c .lora_dropout dr/training_args.json)" = 0.05
if cmp -s dr/model.safetensors plain/model.safetensors; then not_ok "dropout changes training"
else ok "dropout changes training"; fi
expect "the same run again" $D --lora-dropout 0.05 -o dr2 pairs.mp
same "... gives the same model bit for bit (masks from the seed)" dr/model.safetensors dr2/model.safetensors
expect "another seed" $D --lora-dropout 0.05 -s 1 -o dr3 pairs.mp
if cmp -s dr/model.safetensors dr3/model.safetensors; then not_ok "... another seed, another model"
else ok "... another seed, another model"; fi
expect "2 steps, stopped" $D --lora-dropout 0.05 --save-every 1 --stop-after 2 -o drr pairs.mp
expect "... resumed" $D --lora-dropout 0.05 --resume -o drr pairs.mp
same "a resumed dropout run is the uninterrupted one bit for bit" dr/model.safetensors drr/model.safetensors
expect "a checkpoint with dropout 0.05" $D --lora-dropout 0.05 --save-every 1 --stop-after 1 -o drk pairs.mp
expect_fail "... resumed with 0.1: refused" 1 $D --lora-dropout 0.1 --resume -o drk pairs.mp
stderr_has "... as other settings" "other settings"
worst=$(check_merge dr)
check "dropout leaves inference alone: base + adapter = merged (max difference $worst)" \
	"$($PY -c "print($worst < 1e-6)")" = True

S="seva-sft -j 1 -q -m base -b 2 --lr 1e-2 --max-steps 4 --lora 4"
expect "seva-sft --lora-dropout 0.1 --use-rslora" $S --lora-dropout 0.1 --use-rslora -o sd sft.mp
expect "... stopped after 2" $S --lora-dropout 0.1 --use-rslora --save-every 1 --stop-after 2 -o sdr sft.mp
expect "... resumed" $S --lora-dropout 0.1 --use-rslora --resume -o sdr sft.mp
same "seva-sft: resumed = uninterrupted, bit for bit" sd/model.safetensors sdr/model.safetensors
expect "seva-sft without dropout" $S --use-rslora -o sn sft.mp
if cmp -s sd/model.safetensors sn/model.safetensors; then not_ok "seva-sft: dropout changes training"
else ok "seva-sft: dropout changes training"; fi
check "seva-sft adapter: use_rslora, lora_dropout" \
	"$(jq -c '[.use_rslora, .lora_dropout]' sd/adapter/adapter_config.json)" = '[true,0.1]'

# --projector-lr: LLaVA's parameter group, on the same schedule
expect "seva-dpo --projector-lr 0 (SeVa's run scripts)" $D --projector-lr 0 -o p0 pairs.mp
check "... the projector does not move" "$(proj_moved p0)" = 0.0
check "... while it does by default (moved $(proj_moved plain))" \
	"$($PY -c "print($(proj_moved plain) > 1e-6)")" = True
expect "--projector-lr equal to --lr" $D --projector-lr 1e-2 -o pl pairs.mp
same "... is the default, bit for bit" plain/model.safetensors pl/model.safetensors
expect "--projector-lr 1e-3" $D --projector-lr 1e-3 -o p3 pairs.mp
if cmp -s p3/model.safetensors plain/model.safetensors; then not_ok "... another rate, another model"
else ok "... another rate, another model"; fi
check "training_args.json: projector_lr" "$(jq -c '[.lr, .projector_lr]' p3/training_args.json)" = '[0.01,0.001]'
check "... --lr when not given" "$(jq -c .projector_lr plain/training_args.json)" = 0.01
expect "seva-sft --projector-lr 0" $S --projector-lr 0 -o sp0 sft.mp
check "... the projector does not move" "$(proj_moved sp0)" = 0.0
done_testing
