#!/bin/bash
# The PEFT adapter is the trained model: the projector (and any part trained
# in full beside LoRA) is saved with the adapter as PEFT's modules_to_save
# writes it, so that base + adapter gives the merged model's weights.
. "$(dirname "$0")/lib.sh"
PY=/usr/bin/python3
FIX=$TOP/tests/fixtures/train

tiny_base base
seva-synth --split sft -n 8 -s 2 >sft.mp
sft_pairs sft.mp pairs.mp
expect "DPO with LoRA and the projector (the default)" seva-dpo -j 1 -q -m base -b 4 --lr 1e-2 \
	--max-steps 3 --lora 4 -o a pairs.mp
check "adapter_config.json: modules_to_save names the projector" \
	"$(jq -c .modules_to_save a/adapter/adapter_config.json)" = '["multi_modal_projector"]'
# base + adapter, by hand as PEFT computes it (W + α/r · B A, modules_to_save
# replaced), against the merged model seva wrote and evaluated.
check_merge() {
	$PY - base/model.safetensors "$1/adapter/adapter_model.safetensors" "$1/model.safetensors" \
		"$1/adapter/adapter_config.json" <<'PY'
import json, struct, sys
import numpy as np
def load(p):
    d = open(p, "rb").read(); n = struct.unpack("<Q", d[:8])[0]; h = json.loads(d[8:8 + n])
    out = {}
    for k, v in h.items():
        if k == "__metadata__": continue
        assert v["dtype"] == "F32", (k, v["dtype"])
        a, b = v["data_offsets"]
        out[k] = np.frombuffer(d[8 + n + a:8 + n + b], dtype=np.float32).reshape(v["shape"]).astype(np.float64)
    return out
base, ad, merged = load(sys.argv[1]), load(sys.argv[2]), load(sys.argv[3])
cfg = json.load(open(sys.argv[4]))
scale = cfg["lora_alpha"] / cfg["r"]
P = "base_model.model."
# the adapter names modules as transformers 5 does (PEFT matches them
# against the loaded model), the model file keeps llava-hf's older layout
LAYOUT = (("model.vision_tower.", "vision_tower.vision_model."), ("model.multi_modal_projector.",
          "multi_modal_projector."), ("model.language_model.", "language_model.model."),
          ("lm_head.", "language_model.lm_head."))
def name(k):
    k = k[len(P):]
    return next((b + k[len(a):] for a, b in LAYOUT if k.startswith(a)), k)
model = dict(base)
saved = [k for k in ad if "lora_" not in k]
for k in saved:
    model[name(k)] = ad[k]
for k in ad:
    if k.endswith("lora_A.weight"):
        w = name(k).replace(".lora_A.weight", ".weight")
        model[w] = model[w] + scale * ad[k.replace("lora_A", "lora_B")] @ ad[k]
worst = max(np.abs(model[k] - merged[k]).max() for k in merged)
proj = [k for k in saved if k.startswith(P + "model.multi_modal_projector.")]
moved = max(np.abs(base[name(k)] - ad[k]).max() for k in proj)
print(len(saved), len(proj), worst, moved)
PY
}
read nsaved nproj worst moved < <(check_merge a)
check "the adapter holds every projector tensor and nothing else whole ($nsaved, $nproj)" "$nsaved" = "$nproj" -a "$nproj" -ge 2
check "the projector trained (moved by $moved)" "$($PY -c "print($moved > 1e-6)")" = True
check "base + adapter = the merged model (max difference $worst)" "$($PY -c "print($worst < 1e-6)")" = True
expect "--train projector,vision with LoRA" seva-dpo -j 1 -q -m base -b 4 --lr 1e-2 --max-steps 2 \
	--lora 4 --train projector,vision -o b pairs.mp
check "modules_to_save: the tower and the projector" \
	"$(jq -c '.modules_to_save | sort' b/adapter/adapter_config.json)" = '["multi_modal_projector","vision_tower"]'
read nsaved nproj worst moved < <(check_merge b)
check "... base + adapter = the merged model (max difference $worst)" "$($PY -c "print($worst < 1e-6)")" = True
expect "seva-sft --lora: the same" seva-sft -j 1 -q -m base -b 4 --lr 1e-2 --max-steps 2 --lora 4 -o c sft.mp
check "... modules_to_save names the projector" \
	"$(jq -c .modules_to_save c/adapter/adapter_config.json)" = '["multi_modal_projector"]'
read nsaved nproj worst moved < <(check_merge c)
check "... base + adapter = the merged model (max difference $worst)" "$($PY -c "print($worst < 1e-6)")" = True
done_testing
