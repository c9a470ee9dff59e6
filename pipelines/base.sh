#!/bin/bash
# base.sh — builds the embedded base model from nothing: seva-synth's sft
# split → seva-sft from pipelines/base-config.json (random init) → a bf16
# model directory (pipelines/base by default), scored on the bench split
# after every stage.
#
#   pipelines/base.sh [-o OUTDIR] [-V VISION_IMAGES] [-S STAGES] [-n SFT_IMAGES] [-t TURNS] [-s SEED] [-j THREADS]
#
# Stage 0 pretrains the vision tower alone (seva-sft --vision-labels: which
# shapes each image holds), as LLaVA starts from a pretrained CLIP tower:
# trained end to end from random weights through the decoder, the tower
# learned colours and counts but not shapes (POPE at chance after 5000
# steps). Then STAGES supervised stages, each on fresh images (seed, seed+1,
# ...) starting from the previous one with its own warm-up and cosine
# decay, every part trained; each image is one conversation of TURNS
# questions, so one pass of the vision tower teaches several answers.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
export PATH="$(dirname "$here")/bin:$PATH"

out=$here/base vision=64000 stages=2 n=32000 turns=4 seed=1 threads=0
while getopts o:V:S:n:t:s:j: opt; do
	case $opt in
	o) out=$OPTARG ;;
	V) vision=$OPTARG ;;
	S) stages=$OPTARG ;;
	n) n=$OPTARG ;;
	t) turns=$OPTARG ;;
	s) seed=$OPTARG ;;
	j) threads=$OPTARG ;;
	*) sed -n '7p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
	esac
done

work=$(mktemp -d "${TMPDIR:-/tmp}/seva-base.XXXXXX")
trap 'rm -rf "$work"' EXIT

seva-synth --tokenizer > "$work/tokenizer.json"
seva-synth --split bench -n 100 -s 1000 > "$work/bench.msgpack"
common=(--lr 1e-3 -b 32 --warmup-ratio 0.03 --schedule cosine --save-every 200 --dtype bf16 -j "$threads")
: > "$work/stages.txt"

# Stage 0: the vision tower alone, 2 epochs of multi-label shape recognition.
seva-synth --split sft -n "$vision" -s "$((seed + 100))" -q > "$work/vision.msgpack"
seva-sft --config "$here/base-config.json" --tokenizer "$work/tokenizer.json" \
	--preprocessor "$here/base-preprocessor.json" --vision-labels --epochs 2 "${common[@]}" \
	-s "$seed" --metrics "$work/vision.jsonl" -o "$work/stage0" "$work/vision.msgpack"
rm -rf "$work/stage0.ckpt" "$work/vision.msgpack"
tail -1 "$work/vision.jsonl" | sed 's/^/stage 0 (vision tower), last step: /' | tee -a "$work/stages.txt"
from=(-m "$work/stage0")
: > "$work/metrics.jsonl"

for stage in $(seq 1 "$stages"); do
	s=$((seed + stage - 1))
	dir=$work/stage$stage
	[ "$stage" = "$stages" ] && dir=$out
	seva-synth --split sft -n "$n" --turns "$turns" -s "$s" -q > "$work/sft.msgpack"
	seva-sft "${from[@]}" --train vision,projector,decoder "${common[@]}" -s "$s" --metrics "$work/sft.jsonl" \
		-o "$dir" "$work/sft.msgpack"
	cat "$work/sft.jsonl" >> "$work/metrics.jsonl"
	rm -rf "$dir.ckpt" "$work/sft.msgpack"
	rm -rf "$work/stage$((stage - 1))"
	from=(-m "$dir")

	# How good is it now? The bench split (seed 1000, as pipelines/seva.sh uses).
	seva-generate -m "$dir" --views clean -q "$work/bench.msgpack" > "$work/bench.out.msgpack"
	seva-eval "$work/bench.out.msgpack" > "$work/scores.txt"
	{ echo "stage $stage (seed $s, $n images x $turns turns, 1 epoch)"; cat "$work/scores.txt"; echo; } |
		tee -a "$work/stages.txt"
done
cp "$work/vision.jsonl" "$out/vision-metrics.jsonl"
cp "$work/metrics.jsonl" "$out/sft-metrics.jsonl"
cp "$work/scores.txt" "$out/bench-scores.txt"
cp "$work/stages.txt" "$out/bench-stages.txt"
