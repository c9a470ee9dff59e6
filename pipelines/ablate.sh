#!/bin/bash
# ablate.sh — which augmentation makes SeVa work, and do its pairs beat swapped
# roles and random negatives? One table.
#
#   pipelines/ablate.sh [-o DIR] [-m BASE_MODEL] [-n UNLABELED] [-b BENCH_IMAGES]
#                       [-s SEED] [--variants LIST] [--dpo "SEVA-DPO OPTIONS"] [-q]
#
# Variants (all by default; --variants takes a comma-separated subset):
#   none, hflip, mocov2, t200, t500, t800   the augmentation (t = diffusion steps;
#                                          t500 is SeVa's default recipe)
#   swap                                   t500 pairs with chosen and rejected swapped
#   random-negative                        t500, rejected = another sample's answer
# Each variant is one pipelines/seva.sh run in DIR/VARIANT (-n unlabeled samples,
# the same seed, so every variant starts from the same images), with a report
# (pipelines/report.sh) beside it. The bench is answered by the base model once,
# in DIR, and shared by every variant. The table — pairs kept and the bench
# after DPO: POPE adversarial F1 and accuracy, CHAIR_s, CHAIR_i, colour and
# count exact match — goes to stdout and to DIR/ablation.txt, .md and .json.
# A variant with no pairs (none: both views are the same image) trains
# nothing; its row says so. Time grows with -n and -b (and 8 variants): -n 64 -b
# 20 is a quick look, the defaults a real comparison.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
top=$(dirname "$here")
export PATH="$top/bin:$PATH"

out=runs/ablate
model=$here/base
n=256
bench=100
seed=0
dpo_opts=
quiet=
all="none hflip mocov2 t200 t500 t800 swap random-negative"
variants=$all

usage() { sed -n '4,21p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
die() { echo "ablate.sh: $*" >&2; exit 1; }
number() { case $2 in ''|*[!0-9]*) echo "ablate.sh: $1 wants a number, not '$2'" >&2; usage ;; esac; }
while [ $# -gt 0 ]; do
	case $1 in
	-o|-m|-n|-b|-s|--variants|--dpo) [ $# -ge 2 ] || usage ;;
	esac
	case $1 in
	-o) out=$2; shift 2 ;;
	-m) model=$2; shift 2 ;;
	-n) number -n "$2"; n=$2; shift 2 ;;
	-b) number -b "$2"; bench=$2; shift 2 ;;
	-s) number -s "$2"; seed=$2; shift 2 ;;
	--variants) variants=${2//,/ }; shift 2 ;;
	--dpo) dpo_opts=$2; shift 2 ;;
	-q) quiet=-q; shift ;;
	-h|--help) usage ;;
	*) echo "ablate.sh: unknown option '$1'" >&2; usage ;;
	esac
done
for v in $variants; do
	case " $all " in *" $v "*) ;; *) echo "ablate.sh: unknown variant '$v' (one of: $all)" >&2; usage ;; esac
done
[ -n "$variants" ] || usage

# recipe VARIANT, pairing VARIANT: what seva.sh gets for each variant.
recipe() {
	case $1 in
	none|hflip|mocov2) echo "$1" ;;
	t200) echo diffusion:t=200 ;;
	t800) echo diffusion:t=800 ;;
	*) echo diffusion:t=500 ;;
	esac
}
pairing() {
	case $1 in
	swap) echo --swap ;;
	random-negative) echo --random-negative ;;
	*) echo "" ;;
	esac
}

[ -e "$top/bin/seva-dpo" ] || die "tools not built: run 'make' in $top"
[ -f "$model/config.json" ] || die "no model at '$model' (pipelines/base.sh builds it)"
# seva.sh must take the pairing options and the shared base answers.
for flag in --pair --bench-base; do
	grep -q -e "^[[:space:]]*$flag)" "$here/seva.sh" ||
		die "pipelines/seva.sh does not take $flag yet (needed to share the bench and to pass seva-pair options)"
done
mkdir -p "$out"
say() { [ -n "$quiet" ] || printf '\033[1mablate.sh:\033[0m %s\n' "$*" >&2; }
start=$(date +%s)

# 1. The bench, answered by the base model once for every variant (the same
#    bench seed as seva.sh).
if [ ! -s "$out/eval.base.json" ] || [ ! -s "$out/bench.base.msgpack" ] || [ "$(cat "$out/bench.id" 2>/dev/null)" != "$model $bench $seed" ]; then
	say "the bench ($bench images) answered by the base model"
	seva-synth --split bench -n "$bench" -s $((seed + 1000)) >"$out/bench.msgpack"
	seva-generate $quiet -m "$model" --views clean -o "$out/bench.base.msgpack" "$out/bench.msgpack"
	seva-eval --json -o "$out/eval.base.json" "$out/bench.base.msgpack"
	echo "$model $bench $seed" >"$out/bench.id"
else
	say "reusing the base model's bench answers in $out"
fi

# 2. One seva.sh run per variant. A failure is noted in its row; the rest go on.
failed=0
for v in $variants; do
	say "variant $v: recipe $(recipe "$v")$(p=$(pairing "$v"); [ -z "$p" ] || echo ", seva-pair $p") ($(( $(date +%s) - start ))s so far)"
	rm -rf "${out:?}/$v"
	mkdir -p "$out/$v"
	if "$here/seva.sh" -o "$out/$v" -m "$model" -n "$n" -s "$seed" -r "$(recipe "$v")" \
		--pair "$(pairing "$v")" --bench-base "$out/bench.base.msgpack" --dpo "$dpo_opts" $quiet \
		>"$out/$v/seva.log" 2>&1; then
		echo ok >"$out/$v/status"
	elif [ -f "$out/$v/pairs.msgpack" ] && [ ! -s "$out/$v/pairs.msgpack" ]; then
		echo "no pairs" >"$out/$v/status"
	else
		echo failed >"$out/$v/status"
		failed=$((failed + 1))
		echo "ablate.sh: variant $v failed; the last lines of $out/$v/seva.log:" >&2
		tail -5 "$out/$v/seva.log" >&2
	fi
	"$here/report.sh" "$out/$v" 2>>"$out/$v/seva.log" || echo "ablate.sh: no report for $v (see $out/$v/seva.log)" >&2
done

# 3. The table: one JSON object per variant, then text and markdown from it.
{
	jq -c --arg r "(base model)" '{variant: "base", recipe: $r, pairing: "", status: "base", pairs: null, metrics: .}' "$out/eval.base.json"
	for v in $variants; do
		d=$out/$v
		pairs=null
		if [ -s "$d/pairs.msgpack" ]; then
			pairs=$(seva-cat -q -j -f pair.json "$d/pairs.msgpack" | wc -l)
		elif [ -f "$d/pairs.msgpack" ]; then
			pairs=0
		fi
		m=null
		[ "$(cat "$d/status")" != ok ] || [ ! -s "$d/eval.aligned.json" ] || m=$(cat "$d/eval.aligned.json")
		jq -n -c --arg v "$v" --arg r "$(recipe "$v")" --arg p "$(pairing "$v")" --arg s "$(cat "$d/status")" \
			--argjson n "$pairs" --argjson m "$m" '{variant: $v, recipe: $r, pairing: $p, status: $s, pairs: $n, metrics: $m}'
	done
} | jq -s '{model: $model, unlabeled: $n, bench: $bench, seed: $seed, dpo: $dpo, variants: .}' \
	--arg model "$model" --argjson n "$n" --argjson bench "$bench" --argjson seed "$seed" --arg dpo "$dpo_opts" \
	>"$out/ablation.json.tmp"
mv "$out/ablation.json.tmp" "$out/ablation.json"

# Columns: variant, recipe, pairs, the bench metrics (4 decimals), a note.
rows='def f: if . == null then "-" else (. * 10000 | round) as $n | ($n / 10000 | floor | tostring) + "." +
	  ($n % 10000 + 10000 | tostring | .[1:]) end;
	.variants[] | [.variant, .recipe + (if .pairing != "" then " " + .pairing else "" end),
	  (.pairs // "-" | tostring)] +
	  (.metrics | [.pope.adversarial.f1, .pope.adversarial.accuracy, .chair.chair_s, .chair.chair_i,
	               .color.accuracy, .count.accuracy] | map(f)) +
	  [if .status == "base" then "before DPO" elif .status == "no pairs" then "no pairs: nothing to train"
	   elif .status == "failed" then "failed: see \(.variant)/seva.log" else "" end]'
head='["variant", "recipe", "pairs", "POPE-adv F1", "POPE-adv acc", "CHAIR_s", "CHAIR_i", "colour", "count", "note"]'
jq -r "$head, ($rows) | @tsv" "$out/ablation.json" |
	awk -F'\t' '{ printf "%-16s %-34s %6s %11s %12s %8s %8s %7s %7s  %s\n", $1, $2, $3, $4, $5, $6, $7, $8, $9, $10 }' \
	>"$out/ablation.txt"
jq -r "$head, ($head | map(\"---\")), ($rows) | \"| \" + join(\" | \") + \" |\"" "$out/ablation.json" >"$out/ablation.md"
cat "$out/ablation.txt"
say "done in $(( $(date +%s) - start ))s; every variant's run and report.html are in $out/"
[ "$failed" = 0 ] || die "$failed variant(s) failed"
