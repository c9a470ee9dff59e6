#!/bin/bash
# mpi — data-parallel DPO: pairs/s of the training steps with 1 process and
# with mpirun -np 2 (1 thread per rank: -j 1), the same global batch, on a
# small random model (decoder 256 wide, 4 layers; vision 64 wide, 2 layers,
# 32-pixel images) from seva-sft --init-only; LoRA (the default) and --full.
# pairs/s = pairs trained / time in the steps (rank 0's clock, all-reduce
# included); wall = the whole command (start-up, reading, reference scores).
# SEVA_BENCH_STEPS sets the steps (default 12), SEVA_BENCH_BATCH the global
# batch (default 16).
set -eu
cd "$(dirname "$0")/../.."
export PATH="$PWD/bin:$PATH"
PY=/usr/bin/python3
STEPS=${SEVA_BENCH_STEPS:-12}
B=${SEVA_BENCH_BATCH:-16}
if ! command -v mpirun >/dev/null || ! ldd bin/seva-dpo | grep -q libmpi; then
	echo "skipped: needs mpirun and seva-dpo built with MPI (make MPI=1)"
	exit 0
fi
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
T=$(mktemp -d "${TMPDIR:-/tmp}/seva-bench.XXXXXX")
trap 'rm -rf "$T"' EXIT

jq '.vision_config += {hidden_size: 64, intermediate_size: 256, num_hidden_layers: 2,
	num_attention_heads: 4, image_size: 32, patch_size: 8} |
    .text_config += {hidden_size: 256, intermediate_size: 688, num_hidden_layers: 4,
	num_attention_heads: 8, num_key_value_heads: 8, max_position_embeddings: 128}' \
	tests/fixtures/train/tiny-config.json >"$T/config.json"
jq '.crop_size = {height: 32, width: 32} | .size = {shortest_edge: 32}' \
	tests/fixtures/train/tiny-preprocessor.json >"$T/pre.json"
seva-synth --tokenizer >"$T/tok.json"
seva-sft -q --config "$T/config.json" --tokenizer "$T/tok.json" --preprocessor "$T/pre.json" \
	-s 1 --init-only -o "$T/base"
seva-synth --split sft -n $((B * 4)) -s 2 >"$T/sft.mp"
$PY - "$T/sft.mp" "$T/pairs.mp" <<'PY'
import msgpack, sys
s = list(msgpack.Unpacker(open(sys.argv[1], "rb"), raw=False))
def pair(x):
    return {"__key__": x["__key__"], "png": x["png"], "prompt.txt": x["json"]["prompt"],
            "chosen.txt": x["json"]["answer"], "rejected.txt": "I see a purple heart and a pink star."}
open(sys.argv[2], "wb").write(b"".join(msgpack.packb(pair(x), use_bin_type=True) for x in s))
PY

# run NAME CMD...: "NAME: S steps, P pairs/s, wall W s". Each metrics line
# has the step's pairs_per_s = B / its seconds: P = S * B / (sum of seconds).
n=0
run() {
	local name=$1 t0 t1; shift
	n=$((n + 1))
	t0=$(date +%s.%N)
	"$@" --metrics "$T/m$n.jsonl" -o "$T/out$n" "$T/pairs.mp" >/dev/null 2>"$T/err" ||
		{ echo "$name: failed"; cat "$T/err"; return 1; }
	t1=$(date +%s.%N)
	jq -s -r --arg n "$name" --arg b "$B" --arg w "$(awk "BEGIN { printf \"%.2f\", $t1 - $t0 }")" \
		'(map(($b | tonumber) / .pairs_per_s) | add) as $secs |
		"\($n): \(length) steps, \(length * ($b | tonumber) / $secs * 10 | round / 10) pairs/s, wall \($w) s"' \
		"$T/m$n.jsonl"
}
echo "$(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg) (2 ranks need 2 idle cores to scale)"
D="seva-dpo -q -j 1 -m $T/base -b $((B / 2)) --accum 2 --max-steps $STEPS -s 3"
for mode in lora full; do
	extra=
	[ $mode = full ] && extra=--full
	r1=$(run "$mode, 1 process" $D $extra)
	r2=$(run "$mode, 2 ranks  " mpirun -np 2 --oversubscribe $D $extra)
	echo "$r1"
	echo "$r2"
	p1=$(echo "$r1" | sed -n 's/.* \([0-9.]*\) pairs\/s.*/\1/p')
	p2=$(echo "$r2" | sed -n 's/.* \([0-9.]*\) pairs\/s.*/\1/p')
	[ -n "$p1" ] && [ -n "$p2" ] && awk "BEGIN { printf \"$mode: 2 ranks / 1 process = %.2fx\n\", $p2 / $p1 }"
done
