#!/bin/bash
# --precision auto|f32|bf16: a bf16 DPO run follows the f32 one, f32 is the
# default and keeps its bits, the choice is printed (-v) and recorded in
# the training settings and gen.json; without oneDNN bf16 says it is not
# built in. On a model just big enough that its products take the bf16
# path (tensor.h: a side of 32 or more and 2^18 multiply-adds; forward
# products with a side over 64, see vlm.c's mm_fwd).
. "$(dirname "$0")/lib.sh"
PY=/usr/bin/python3
FIX=$TOP/tests/fixtures/train

seva-synth --tokenizer >tok.json
jq '.text_config.hidden_size = 128 | .text_config.intermediate_size = 256 |
	.text_config.num_attention_heads = 4 | .text_config.num_key_value_heads = 2 |
	.vision_config.hidden_size = 64 | .vision_config.intermediate_size = 128' \
	"$FIX/tiny-config.json" >cfg.json
seva-sft --config cfg.json --tokenizer tok.json --preprocessor "$FIX/tiny-preprocessor.json" \
	-s 3 --init-only -o base 2>init.err || { cat init.err; exit 1; }
seva-synth --split sft -n 16 -s 2 >sft.mp
$PY - sft.mp pairs.mp <<'PY'
import msgpack, sys
s = list(msgpack.Unpacker(open(sys.argv[1], "rb"), raw=False))
pk = lambda xs: b"".join(msgpack.packb(x, use_bin_type=True) for x in xs)
open(sys.argv[2], "wb").write(pk([{"__key__": x["__key__"], "png": x["png"],
    "prompt.txt": x["json"]["prompt"], "chosen.txt": x["json"]["answer"],
    "rejected.txt": "I see a purple heart and a pink star.", "pair.json": {"source": x["__key__"]}}
    for x in s]))
PY
D="seva-dpo -j 2 -m base -b 4 --lr 1e-3 -s 4 --max-steps 12"

expect_fail "a bad --precision: usage" 2 $D --precision f16 -o x pairs.mp
stderr_has "names the option and its values" "^seva-dpo: --precision: not f32, bf16 or auto: 'f16'"

if ! seva-dpo -m base --precision bf16 -o nb --max-steps 1 pairs.mp 2>nb.err; then
	# a build without oneDNN: f32 only
	check "without oneDNN bf16 says it is not built in" \
		"$(grep -c 'bf16 is not built in' nb.err)" = 1
	expect "without oneDNN auto runs, in f32" $D -v --precision auto -o na pairs.mp
	stderr_has "... and says so" "products in f32 \(auto: bf16 is not built in"
	done_testing
	exit
fi

expect "-v prints the BLAS line and the precision" $D -v --precision bf16 --full \
	--save-every 6 --metrics bf16.jsonl -o bf16 pairs.mp
stderr_has "... bf16, with oneDNN's implementation" "^seva-dpo: OpenBLAS .*; products in bf16 \(--precision bf16; oneDNN [0-9.]+ [a-z]"
check "the training settings record it" "$(jq -r .settings.precision bf16.ckpt/state.json)" = bf16
expect "f32 by default" $D --full --save-every 6 --metrics f32.jsonl -o f32 pairs.mp
check "... recorded as f32" "$(jq -r .settings.precision f32.ckpt/state.json)" = f32
expect "--precision f32" $D --full --precision f32 --metrics f32b.jsonl -o f32b pairs.mp
jq -c 'del(.pairs_per_s)' f32.jsonl >f32.curve
jq -c 'del(.pairs_per_s)' f32b.jsonl >f32b.curve
same "--precision f32 is the default's run, bit for bit" f32.curve f32b.curve
same "... and its weights" f32/model.safetensors f32b/model.safetensors

# The loss curves. Tolerance 3e-3 per step, absolute: on this run bf16
# moves the loss by at most 2e-4 (each product within 2^-7 of its f32
# value, test_bf16), while the same run with a 10% higher learning rate
# moves it by 1.2e-2, so the check tells "the same training, rounded" from
# "another training" (checked below with that run).
maxdiff() { paste <(jq .loss "$1") <(jq .loss "$2") |
	awk '{ d = $1 - $2; if (d < 0) d = -d; if (d > m) m = d } END { printf "%.6g\n", m }'; }
d=$(maxdiff f32.jsonl bf16.jsonl)
check "bf16 full fine-tuning: the loss curve follows f32's within 3e-3 per step (max $d)" \
	"$(echo "$d" | awk '{ print ($1 <= 3e-3) }')" = 1
check "... it is bf16 (the curves differ)" "$(cmp -s f32.curve <(jq -c 'del(.pairs_per_s)' bf16.jsonl); echo $?)" = 1
check "... step 1 is log 2 exactly in both (reference and policy in the same precision)" \
	"$(jq -s '.[0].loss == 0.6931471805599453' bf16.jsonl)" = true
check "... and the loss falls (last < first / 2)" "$(jq -s '.[-1].loss < .[0].loss / 2' bf16.jsonl)" = true
expect "f32 with lr 1.1e-3" $D --full --lr 1.1e-3 --metrics lr.jsonl -o lr pairs.mp
d=$(maxdiff f32.jsonl lr.jsonl)
check "the tolerance tells another run apart (lr +10%: max $d > 3e-3)" \
	"$(echo "$d" | awk '{ print ($1 > 3e-3) }')" = 1

expect "LoRA in bf16 (frozen base: one bf16 copy)" $D --precision bf16 --metrics lb.jsonl -o lb pairs.mp
expect "LoRA in f32" $D --metrics lf.jsonl -o lf pairs.mp
d=$(maxdiff lf.jsonl lb.jsonl)
check "LoRA: the loss curve follows f32's within 3e-3 per step (max $d)" \
	"$(echo "$d" | awk '{ print ($1 <= 3e-3) }')" = 1

expect "auto chooses and says why" $D -v --precision auto --max-steps 1 -o au pairs.mp
stderr_has "... f32 or bf16, with both rates" "products in (f32|bf16) \(auto: oneDNN .* bf16 [0-9]+ GFLOP/s, f32 [0-9]+"

seva-synth --split unlabeled -n 2 -s 4 | seva-augment >in.mp
expect "seva-generate --precision bf16" seva-generate -j 2 -m base --max-new-tokens 4 \
	--precision bf16 -o g.mp in.mp
check "gen.json records it" "$(seva-cat --jsonl g.mp | jq -s 'map(.["gen.json"].settings.precision == "bf16") | all')" = true
expect "seva-generate by default" seva-generate -j 2 -m base --max-new-tokens 4 -o g32.mp in.mp
check "... records f32" "$(seva-cat --jsonl g32.mp | jq -s 'map(.["gen.json"].settings.precision == "f32") | all')" = true
expect_fail "seva-sft: a bad --precision is a usage error too" 2 seva-sft -m base -o s \
	--precision half sft.mp
done_testing
