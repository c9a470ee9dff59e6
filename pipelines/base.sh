#!/bin/bash
# base.sh — builds the embedded base model from nothing: seva-synth's sft
# split → seva-sft from pipelines/base-config.json (random init, every part
# trained) → a bf16 model directory (pipelines/base by default), then scores
# it on the bench split.
#
#   pipelines/base.sh [-o OUTDIR] [-n SFT_SAMPLES] [-e EPOCHS] [-s SEED] [-j THREADS]
#
# The shipped model was built with the defaults below on a 2-core machine.
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
seva-synth --split sft -n "$n" -s "$seed" > "$work/sft.msgpack"
seva-sft -j "$threads" --config "$here/base-config.json" --tokenizer "$work/tokenizer.json" \
	--preprocessor "$here/base-preprocessor.json" --train vision,projector,decoder \
	--lr 1e-3 -b 32 --epochs "$epochs" --warmup-ratio 0.03 --schedule cosine \
	--save-every 100 -s "$seed" --metrics "$work/sft.jsonl" --dtype bf16 \
	-o "$out" "$work/sft.msgpack"
cp "$work/sft.jsonl" "$out/sft-metrics.jsonl"
rm -rf "$out.ckpt"

# How good is it? The bench split (seed 1000, as pipelines/seva.sh uses).
seva-synth --split bench -n 100 -s 1000 > "$work/bench.msgpack"
seva-generate -m "$out" --views clean "$work/bench.msgpack" > "$work/bench.out.msgpack"
seva-eval "$work/bench.out.msgpack" | tee "$out/bench-scores.txt"
