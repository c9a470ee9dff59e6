#!/bin/bash
# base.sh — builds the embedded base model from nothing: seva-synth's sft
# split → seva-sft from pipelines/base-config.json (random init) → a bf16
# model directory (pipelines/base by default), scored on the bench split
# after every stage.
#
#   pipelines/base.sh [-r default|llava] [-m FROM] [-o OUTDIR] [-b BENCH_IMAGES] [-V VISION_IMAGES] [-S STAGES] [-n SFT_IMAGES] [-t TURNS] [-s SEED] [-j THREADS] [-w "SEVA-SYNTH NOISE OPTIONS"] [-a ATTRIBUTE_IMAGES]
#
# -r llava builds pipelines/base-llava, a base in LLaVA-1.5-7B's regime
# (pipelines/base-llava/TARGET), from the shipped base (-m, default
# pipelines/base) by one more supervised stage, every part trained, on texts
# written from a noisy annotation the way GPT-4 wrote LLaVA's from captions
# and boxes (seva-synth --hallucinate 0.8 --omit 0.4: absent partners named,
# small objects passed over, in descriptions and existence answers; colour
# and count answers true, as LLaVA-1.5's short-answer VQA is human-labelled):
# N images of TURNS-question conversations of the whole mix and N/2 of six
# exist/colour/count questions, lr 3e-4, the loss averaged per answer. It is
# scored on a 1000-image bench (-b), the size the main job uses. The stage
# also trains the tower on the colour answers: with the tower frozen the
# colour answers stay near the base's (README, "Why colour questions fail").
# -w replaces the annotation noise (seva-synth options, default
# "--hallucinate 0.8 --omit 0.4"); -a N first trains the tower alone on N
# images' colour+shape labels (seva-sft --vision-labels --vision-attributes).
# About 20 minutes on a 2-core machine shared with other jobs.
#
# The default recipe builds pipelines/base from nothing.
# Stage 0 pretrains the vision tower alone (seva-sft --vision-labels: which
# shapes each image holds), as LLaVA starts from a pretrained CLIP tower:
# trained end to end from random weights through the decoder, the tower
# learned colours and counts but not shapes (POPE at chance after 5000
# steps). Then STAGES supervised stages, each on fresh images (seed, seed+1,
# ...) starting from the previous one with its own warm-up and cosine
# decay, every part trained; each image is one conversation of TURNS
# questions, so one pass of the vision tower teaches several answers. Then
# a stage of existence questions alone and a last stage of short answers
# and the whole mix (see below). About 35 minutes on a 2-core machine.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
export PATH="$(dirname "$here")/bin:$PATH"

recipe=default from_model=$here/base out= bench= vision= stages= n= turns=4 seed=1 threads=0
noise="--hallucinate 0.8 --omit 0.4" attr=0
while getopts r:m:o:b:V:S:n:t:s:j:w:a: opt; do
	case $opt in
	r) recipe=$OPTARG ;;
	m) from_model=$OPTARG ;;
	b) bench=$OPTARG ;;
	o) out=$OPTARG ;;
	V) vision=$OPTARG ;;
	S) stages=$OPTARG ;;
	n) n=$OPTARG ;;
	t) turns=$OPTARG ;;
	s) seed=$OPTARG ;;
	j) threads=$OPTARG ;;
	w) noise=$OPTARG ;;
	a) attr=$OPTARG ;;
	*) sed -n '7p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
	esac
done
case $recipe in
default)
	: "${out:=$here/base}" "${bench:=100}" "${vision:=64000}" "${n:=32000}" "${stages:=2}"
	config=$here/base-config.json preproc=$here/base-preprocessor.json ;;
llava)
	: "${out:=$here/base-llava}" "${bench:=1000}" "${n:=12000}"
	[ -f "$from_model/config.json" ] || { echo "base.sh: -m: no model at '$from_model'" >&2; exit 1; } ;;
*) echo "base.sh: -r: not default or llava: $recipe" >&2; exit 2 ;;
esac
work=$(mktemp -d "${TMPDIR:-/tmp}/seva-base.XXXXXX")
trap 'rm -rf "$work"' EXIT

seva-synth --tokenizer > "$work/tokenizer.json"
seva-synth --split bench -n "$bench" -s 1000 > "$work/bench.msgpack"
common=(--lr 1e-3 -b 32 --warmup-ratio 0.03 --schedule cosine --save-every 200 --dtype bf16 -j "$threads")
: > "$work/stages.txt"

# Scores DIR on the bench split (seed 1000, as pipelines/seva.sh uses) under TITLE.
score() {
	seva-generate -m "$1" --views clean -q "$work/bench.msgpack" > "$work/bench.out.msgpack"
	seva-eval "$work/bench.out.msgpack" > "$work/scores.txt"
	{ echo "$2"; cat "$work/scores.txt"; echo; } | tee -a "$work/stages.txt"
}

if [ "$recipe" = llava ]; then
	read -r -a world <<< "$noise"
	{ echo "# pipelines/base.sh -r llava: $(basename "$from_model") + one noisy-annotation stage ($noise); bench seed 1000, $bench images"; echo; } > "$work/stages.txt"
	# Fresh images: the default recipe's stages drew seeds 1-4 and 101.
	qa=$((n / 2)) ds=$((seed + 11))
	if [ "$attr" -gt 0 ]; then
		# The tower alone first, on which colour goes with which shape
		# (--vision-attributes): "red circle" as well as "circle".
		seva-synth --split sft -n "$attr" --start $((n + qa)) -s "$ds" -q > "$work/attr.msgpack"
		seva-sft -m "$from_model" --vision-labels --vision-attributes "${common[@]}" --lr 3e-4 -s "$seed" \
			--metrics "$work/attr.jsonl" -o "$work/attr" "$work/attr.msgpack"
		rm -rf "$work/attr.ckpt" "$work/attr.msgpack"
		tail -1 "$work/attr.jsonl" | sed 's/^/tower on colour+shape labels, last step: /' | tee -a "$work/stages.txt"
		from_model=$work/attr
	fi
	seva-synth --split sft -n "$n" --turns "$turns" "${world[@]}" -s "$ds" -q > "$work/mix.msgpack"
	seva-synth --split sft -n "$qa" --start "$n" --turns 6 --tasks exist,color,count "${world[@]}" -s "$ds" -q > "$work/qa.msgpack"
	seva-sft -m "$from_model" --train vision,projector,decoder "${common[@]}" --lr 3e-4 --loss-per turn -s "$seed" \
		--metrics "$work/sft.jsonl" -o "$out" "$work/mix.msgpack" "$work/qa.msgpack"
	rm -rf "$out.ckpt"
	score "$out" "after (data seed $ds, $n images x $turns turns + $qa x 6 exist/colour/count turns, all from the noisy annotation; every part, lr 3e-4, loss per turn)"
	cp "$work/sft.jsonl" "$out/sft-metrics.jsonl"
	[ ! -f "$work/attr.jsonl" ] || cp "$work/attr.jsonl" "$out/vision-metrics.jsonl"
	cp "$work/stages.txt" "$out/bench-stages.txt"
	exit
fi

# Stage 0: the vision tower alone, 2 epochs of multi-label shape recognition.
seva-synth --split sft -n "$vision" -s "$((seed + 100))" -q > "$work/vision.msgpack"
seva-sft --config "$config" --tokenizer "$work/tokenizer.json" \
	--preprocessor "$preproc" --vision-labels --epochs 2 "${common[@]}" \
	-s "$seed" --metrics "$work/vision.jsonl" -o "$work/stage0" "$work/vision.msgpack"
rm -rf "$work/stage0.ckpt" "$work/vision.msgpack"
tail -1 "$work/vision.jsonl" | sed 's/^/stage 0 (vision tower), last step: /' | tee -a "$work/stages.txt"
from=(-m "$work/stage0")
: > "$work/metrics.jsonl"


# Stages 1..S: conversations of the whole mix, every part trained.
for stage in $(seq 1 "$stages"); do
	s=$((seed + stage - 1))
	seva-synth --split sft -n "$n" --turns "$turns" -s "$s" -q > "$work/sft.msgpack"
	seva-sft "${from[@]}" --train vision,projector,decoder "${common[@]}" -s "$s" \
		--metrics "$work/sft.jsonl" -o "$work/stage$stage" "$work/sft.msgpack"
	cat "$work/sft.jsonl" >> "$work/metrics.jsonl"
	rm -rf "$work/stage$stage.ckpt" "$work/sft.msgpack" "$work/stage$((stage - 1))"
	from=(-m "$work/stage$stage")
	score "$work/stage$stage" "stage $stage (seed $s, $n images x $turns turns, 1 epoch)"
done

# Stage S+1: conversations of existence questions only (4 per image). After
# the stages above the descriptions were nearly perfect but every yes/no
# answer about an image was the same whichever shape was asked about; here
# the answers start to depend on it (the loss leaves ln 2 per answer after
# about 50 steps; two data seeds tried, both learned it).
s=$((seed + stages))
ne=$((n * 7 / 10))
seva-synth --split sft -n "$ne" --turns 4 --tasks exist -s "$s" -q > "$work/exist.msgpack"
seva-sft "${from[@]}" --train vision,projector,decoder "${common[@]}" --lr 5e-4 -s "$s" \
	--metrics "$work/sft.jsonl" -o "$work/exist" "$work/exist.msgpack"
cat "$work/sft.jsonl" >> "$work/metrics.jsonl"
rm -rf "$work/exist.ckpt" "$work/exist.msgpack" "$work/stage$stages"
score "$work/exist" "stage $((stages + 1)) (seed $s, $ne images x 4 existence questions, lr 5e-4)"

# The last stage brings the other answers back without losing existence:
# two thirds of the images as six exist/colour/count questions, a third as
# the whole mix, the loss averaged per answer (--loss-per turn) so a
# one-word answer weighs as much as a description.
s=$((seed + stages + 1))
nl=$((n * 3 / 4)) qa=$((n / 2))
seva-synth --split sft -n "$qa" --turns 6 --tasks exist,color,count -s "$s" -q > "$work/qa.msgpack"
seva-synth --split sft -n $((nl - qa)) --turns "$turns" -s "$s" --start "$qa" -q > "$work/mix.msgpack"
seva-sft -m "$work/exist" --train vision,projector,decoder "${common[@]}" --lr 3e-4 --loss-per turn -s "$s" \
	--metrics "$work/sft.jsonl" -o "$out" "$work/qa.msgpack" "$work/mix.msgpack"
cat "$work/sft.jsonl" >> "$work/metrics.jsonl"
rm -rf "$out.ckpt"
score "$out" "stage $((stages + 2)) (seed $s, $qa images x 6 short-answer turns + $((nl - qa)) x $turns turns, loss per turn, lr 3e-4)"
cp "$work/vision.jsonl" "$out/vision-metrics.jsonl"
cp "$work/metrics.jsonl" "$out/sft-metrics.jsonl"
cp "$work/scores.txt" "$out/bench-scores.txt"
cp "$work/stages.txt" "$out/bench-stages.txt"
