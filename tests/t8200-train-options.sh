#!/bin/bash
# The trainer options a TRL or LLaVA user reaches for: AdamW's β1, β2, ε and
# warm-up in steps; training_args.json beside every trained model; the base's
# dtype kept; --version on every tool.
. "$(dirname "$0")/lib.sh"
PY=/usr/bin/python3
FIX=$TOP/tests/fixtures/train

tiny_base base
seva-synth --split sft -n 8 -s 5 >sft.mp
T="seva-sft -j 1 -q -m base -b 2 -s 9"

# bad values: exit 2 naming the option and its range
for t in sft dpo; do
	for bad in "--adam-beta1 1" "--adam-beta1 -0.1" "--adam-beta2 1" "--adam-beta2 nan" \
		"--adam-eps 0" "--adam-eps 2" "--warmup-steps -1" "--warmup-steps x"; do
		set -- $bad
		expect_fail "seva-$t $bad: usage error" 2 seva-$t -m base -o x $bad sft.mp
		stderr_has "seva-$t $bad: names $1 and its range" "^seva-$t: $1: not a.* in \["
	done
done

# --warmup-steps: a linear ramp over that many steps, winning over the ratio
expect "--warmup-steps 3" $T --max-steps 6 --schedule constant --lr 0.01 --warmup-ratio 0.5 \
	--warmup-steps 3 --metrics w.jsonl -o w sft.mp
check "lr 0, 1/3, 2/3 of the peak, then the peak" \
	"$(jq -s -c 'map(.lr)' w.jsonl)" = "[0,0.0033333333333333335,0.006666666666666667,0.01,0.01,0.01]"
expect "--warmup-ratio alone: ceil(0.5 x 6) = 3 steps too" $T --max-steps 6 --schedule constant \
	--lr 0.01 --warmup-ratio 0.5 --metrics r.jsonl -o r sft.mp
check "... the same schedule" "$(jq -s -c 'map(.lr)' r.jsonl)" = "$(jq -s -c 'map(.lr)' w.jsonl)"
check "--warmup-steps 0: the peak from step 1" \
	"$($T --max-steps 2 --schedule constant --lr 0.01 --warmup-steps 0 --metrics z.jsonl -o z sft.mp && jq -s -c 'map(.lr)' z.jsonl)" = "[0.01,0.01]"

# AdamW's constants reach the optimizer (adamw_update itself is tested
# against torch's AdamW in test_tensor): other constants, other weights.
A="$T --max-steps 2 --schedule constant --warmup-steps 0 --lr 0.01 --clip 0 --train projector"
expect "default AdamW" $A -o d0 sft.mp
expect "--adam-beta1 0.5 --adam-beta2 0.9 --adam-eps 1e-3" $A --adam-beta1 0.5 --adam-beta2 0.9 \
	--adam-eps 1e-3 -o d1 sft.mp
if cmp -s d0/model.safetensors d1/model.safetensors; then not_ok "other constants give other weights"
else ok "other constants give other weights"; fi
check "training_args.json records them" \
	"$(jq -c '[.adam_beta1, .adam_beta2, .adam_eps, .warmup_steps]' d1/training_args.json)" = "[0.5,0.9,0.001,0]"
expect "a checkpoint with --adam-beta1 0.5" $A --adam-beta1 0.5 --save-every 1 --stop-after 1 -o k sft.mp
expect_fail "resuming with another β1 is refused" 1 $A --resume -o k sft.mp
stderr_has "... as other settings" "other settings"

# training_args.json: the full settings, the version, the command
check "training_args.json beside the model" -f w/training_args.json
check "seva version, tool, command" \
	"$(jq -r '[.seva_version, .tool, .command[0], (.command | index("--warmup-steps") != null)] | @tsv' w/training_args.json)" \
	"=" "$(printf '%s\tseva-sft\tseva-sft\ttrue' "$(cat "$TOP/VERSION")")"
check "the settings: lr, schedule, steps, batch, seed, examples, dtype, output" \
	"$(jq -c '[.lr, .schedule, .total_steps, .batch, .seed, .examples, .dtype, .output_dir]' w/training_args.json)" \
	= '[0.01,"constant",6,2,9,8,"F32","w"]'
sft_pairs sft.mp pairs.mp
expect "seva-dpo" seva-dpo -j 1 -q -m base -b 2 --max-steps 1 --beta 0.2 -o dp pairs.mp
check "seva-dpo writes training_args.json with its loss settings" \
	"$(jq -c '[.tool, .beta, .lora, .examples]' dp/training_args.json)" = '["seva-dpo",0.2,16,8]'
check "... beside the model, not in the adapter" ! -e dp/adapter/training_args.json

# The base's dtype is kept unless --dtype says otherwise (a bf16 base was
# written as f32: twice the size).
expect "a bf16 base" seva-sft --config "$FIX/tiny-config.json" --tokenizer tok.json \
	--preprocessor "$FIX/tiny-preprocessor.json" -s 3 --init-only --dtype bf16 -o b16
dtypes() { $PY -c 'import json,struct,sys; f=open(sys.argv[1],"rb"); n=struct.unpack("<Q",f.read(8))[0]; print(",".join(sorted({v["dtype"] for k,v in json.loads(f.read(n)).items() if k!="__metadata__"})))' "$1"; }
for t in sft dpo; do
	in=sft.mp; [ $t = dpo ] && in=pairs.mp
	expect "seva-$t from the bf16 base" seva-$t -j 1 -q -m b16 -b 2 --max-steps 1 -o t16$t $in
	check "seva-$t: the model stays bf16" "$(dtypes t16$t/model.safetensors)" = BF16
	check "seva-$t: config.json says so" "$(jq -r .torch_dtype t16$t/config.json)" = bfloat16
	expect "seva-$t --dtype f32 when asked" seva-$t -j 1 -q -m b16 -b 2 --max-steps 1 --dtype f32 -o t32$t $in
	check "seva-$t: then f32" "$(dtypes t32$t/model.safetensors)" = F32
done
check "an f32 base stays f32" "$(dtypes w/model.safetensors)" = F32

# --version on every tool, from one place
want=$(cat "$TOP/VERSION")
for t in cat synth augment generate pair sft dpo eval tok; do
	expect "seva-$t --version: exit 0" seva-$t --version
	check "seva-$t --version prints its name and the version" "$(cat "$TMP/.out")" = "seva-$t $want"
done
expect "--version after other options" seva-dpo -q --version
done_testing
