#!/bin/bash
# base.sh — builds the embedded base model from nothing: seva-synth's sft
# split → seva-sft from pipelines/base-config.json (random init, every part
# trained) → a bf16 model directory (pipelines/base by default), then scores
# it on the bench split. Two stages of N samples and E epochs each, the
# second on fresh samples (seed+1) starting from the first: the vision tower
# learns from scratch and keeps improving after the first cosine cycle.
#
#   pipelines/base.sh [-o OUTDIR] [-n SFT_SAMPLES] [-e EPOCHS] [-s SEED] [-j THREADS]
#
# The shipped model was built with the defaults below on a 2-core machine
# (about 75 minutes of training while other jobs shared the machine).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
export PATH="$(dirname "$here")/bin:$PATH"

out=$here/base n=24000 epochs=2 seed=1 threads=0
while getopts o:n:e:s:j: opt; do
	case $opt in
	o) out=$OPTARG ;;
	n) n=$OPTARG ;;
	e) epochs=$OPTARG ;;
	s) seed=$OPTARG ;;
	j) threads=$OPTARG ;;
	*) sed -n '7p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
	esac
done

work=$(mktemp -d "${TMPDIR:-/tmp}/seva-base.XXXXXX")
trap 'rm -rf "$work"' EXIT

seva-synth --tokenizer > "$work/tokenizer.json"
common=(--train vision,projector,decoder --lr 1e-3 -b 32 --epochs "$epochs" --warmup-ratio 0.03
	--schedule cosine --save-every 100 --dtype bf16 -j "$threads")

# Stage 1: from a random initialisation.
seva-synth --split sft -n "$n" -s "$seed" > "$work/sft1.msgpack"
seva-sft --config "$here/base-config.json" --tokenizer "$work/tokenizer.json" \
	--preprocessor "$here/base-preprocessor.json" "${common[@]}" -s "$seed" \
	--metrics "$work/sft1.jsonl" -o "$work/stage1" "$work/sft1.msgpack"

# Stage 2: fresh samples, starting from stage 1.
seva-synth --split sft -n "$n" -s $((seed + 1)) > "$work/sft2.msgpack"
seva-sft -m "$work/stage1" "${common[@]}" -s $((seed + 1)) \
	--metrics "$work/sft2.jsonl" -o "$out" "$work/sft2.msgpack"
cat "$work/sft1.jsonl" "$work/sft2.jsonl" > "$out/sft-metrics.jsonl"
rm -rf "$out.ckpt"

# How good is it? The bench split (seed 1000, as pipelines/seva.sh uses).
seva-synth --split bench -n 100 -s 1000 > "$work/bench.msgpack"
seva-generate -m "$out" --views clean "$work/bench.msgpack" > "$work/bench.out.msgpack"
seva-eval "$work/bench.out.msgpack" > "$out/bench-scores.txt"
cat "$out/bench-scores.txt"
