#!/bin/bash
# ablate.sh — which augmentation makes SeVa work, and do its pairs beat swapped
# roles and random negatives? One table.
#
#   pipelines/ablate.sh [-o DIR] [-m BASE_MODEL] [-n UNLABELED] [-b BENCH_IMAGES]
#                       [-s SEED] [--seeds K] [--variants LIST] [--dpo "SEVA-DPO OPTIONS"] [-q]
#
# Variants (all by default; --variants takes a comma-separated subset):
#   none, hflip, mocov2, t200, t500, t800   the augmentation (t = diffusion steps;
#                                          t500 is SeVa's default recipe)
#   swap                                   t500 pairs with chosen and rejected swapped
#   random-negative                        t500, rejected = another sample's answer
#   seva-mix                               t500 on SeVa's own question mix
#                                          (seva-synth --mix seva: short answers,
#                                          two per image, no descriptions)
# Each variant is K pipelines/seva.sh runs (--seeds, default 3), in
# DIR/VARIANT/sSEED for SEED = -s .. -s + K - 1: the seed of the unlabeled data,
# the augmentation and DPO, the same K seeds for every variant, so that seed k
# starts every variant from the same images; a report (report.sh) beside each. The
# bench (-b images, seed -s + 1000) is answered by the base model once, in DIR,
# and shared by every run. Each row is the mean over the K seeds ± half its 95 %
# interval, pooled by seva-eval --compare: a bootstrap over the bench's images
# that also draws the K seeds with replacement (DIR/VARIANT/compare.json); '*'
# marks a mean whose difference from the base has an interval excluding 0. The
# table — pairs kept (mean) and the bench after DPO: POPE adversarial F1 and
# accuracy, CHAIR_s, CHAIR_i, colour and count exact match — goes to stdout and
# to DIR/ablation.txt, .md and .json. A variant with no pairs (none: both views
# are the same image) trains nothing; its row says so. Time grows with -n, -b,
# --seeds and 9 variants: -n 64 -b 20 --seeds 1 is a quick look.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
top=$(dirname "$here")
export PATH="$top/bin:$PATH"

out=runs/ablate
model=$here/base
n=256
bench=100
seed=0
seeds=3
dpo_opts=
quiet=
all="none hflip mocov2 t200 t500 t800 swap random-negative seva-mix"
variants=$all

usage() { sed -n '4,29p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
die() { echo "ablate.sh: $*" >&2; exit 1; }
number() { case $2 in ''|*[!0-9]*) echo "ablate.sh: $1 wants a number, not '$2'" >&2; usage ;; esac; }
while [ $# -gt 0 ]; do
	case $1 in
	-o|-m|-n|-b|-s|--seeds|--variants|--dpo) [ $# -ge 2 ] || usage ;;
	esac
	case $1 in
	-o) out=$2; shift 2 ;;
	-m) model=$2; shift 2 ;;
	-n) number -n "$2"; n=$2; shift 2 ;;
	-b) number -b "$2"; bench=$2; shift 2 ;;
	-s) number -s "$2"; seed=$2; shift 2 ;;
	--seeds) number --seeds "$2"; seeds=$2; shift 2 ;;
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
[ "$seeds" -ge 1 ] || { echo "ablate.sh: --seeds wants 1 or more, not '$seeds'" >&2; usage; }

# recipe VARIANT, pairing VARIANT, synth VARIANT: what seva.sh gets for each variant.
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
synth() {
	case $1 in
	seva-mix) echo "--mix seva" ;;
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

# 2. One seva.sh run per variant and seed. A failure is noted in its row; the
#    rest go on. A variant is ok when every seed trained, "no pairs" when none
#    had pairs, failed otherwise.
failed=0
for v in $variants; do
	rm -rf "${out:?}/$v"
	mkdir -p "$out/$v"
	for k in $(seq "$seed" $((seed + seeds - 1))); do
		d=$out/$v/s$k
		mkdir -p "$d"
		say "variant $v, seed $k: recipe $(recipe "$v")$(p=$(pairing "$v"); [ -z "$p" ] || echo ", seva-pair $p") ($(( $(date +%s) - start ))s so far)"
		if "$here/seva.sh" -o "$d" -m "$model" -n "$n" -s "$k" -r "$(recipe "$v")" \
			--pair "$(pairing "$v")" --synth "$(synth "$v")" --bench-base "$out/bench.base.msgpack" --dpo "$dpo_opts" $quiet \
			>"$d/seva.log" 2>&1; then
			echo ok >"$d/status"
		elif [ -f "$d/pairs.msgpack" ] && [ ! -s "$d/pairs.msgpack" ]; then
			echo "no pairs" >"$d/status"
		else
			echo failed >"$d/status"
			echo "ablate.sh: variant $v, seed $k failed; the last lines of $d/seva.log:" >&2
			tail -5 "$d/seva.log" >&2
		fi
		"$here/report.sh" "$d" 2>>"$d/seva.log" || echo "ablate.sh: no report for $v seed $k (see $d/seva.log)" >&2
	done
	st=$(cat "$out/$v"/s*/status | sort -u | tr '\n' ,)
	case $st in
	ok,) echo ok ;;
	"no pairs,") echo "no pairs" ;;
	*) failed=$((failed + 1)); echo failed ;;
	esac >"$out/$v/status"
	# The seeds pooled against the base: mean, interval, significance.
	if [ "$(cat "$out/$v/status")" = ok ]; then
		seva-eval --compare --json -o "$out/$v/compare.json" "$out/eval.base.json" "$out/$v"/s*/eval.aligned.json
	fi
done
# The base model's own intervals (its bootstrap over images).
seva-eval --compare --json -o "$out/compare.base.json" "$out/eval.base.json" "$out/eval.base.json"

# 3. The table: one JSON object per variant, then text and markdown from it.
# The six columns, as paths into the metrics.
cols='[["pope","adversarial","f1"], ["pope","adversarial","accuracy"], ["chair","chair_s"], ["chair","chair_i"],
       ["color","accuracy"], ["count","accuracy"]]'
{
	jq -c --arg r "(base model)" --argjson cols "$cols" \
		'{variant: "base", recipe: $r, pairing: "", status: "base", seeds: [], pairs: null, pairs_per_seed: [],
		  metrics: .before, cells: [$cols[] as $p | {mean: (.before | getpath($p)), ci: (.before_ci | getpath($p)),
		  diff: null, diff_ci: null, significant: false}]}' "$out/compare.base.json"
	for v in $variants; do
		d=$out/$v
		per=()
		for k in $(seq "$seed" $((seed + seeds - 1))); do
			if [ -s "$d/s$k/pairs.msgpack" ]; then
				per+=("$(seva-cat -q --jsonl -f pair.json "$d/s$k/pairs.msgpack" | wc -l)")
			elif [ -f "$d/s$k/pairs.msgpack" ]; then
				per+=(0)
			else
				per+=(null)
			fi
		done
		c=null
		[ "$(cat "$d/status")" != ok ] || [ ! -s "$d/compare.json" ] || c=$(cat "$d/compare.json")
		jq -n -c --arg v "$v" --arg r "$(recipe "$v")" --arg p "$(pairing "$v")" --arg s "$(cat "$d/status")" \
			--argjson per "[$(IFS=,; echo "${per[*]}")]" --argjson c "$c" --argjson cols "$cols" \
			--argjson seeds "[$(seq -s, "$seed" $((seed + seeds - 1)))]" '
			{variant: $v, recipe: $r, pairing: $p, status: $s, seeds: $seeds, pairs_per_seed: $per,
			 pairs: (if ($per | all(. != null)) then ($per | add / length) else null end),
			 metrics: (if $c then $c.after else null end),
			 cells: (if $c then [$cols[] as $q | {mean: ($c.after | getpath($q)), ci: ($c.after_ci | getpath($q)),
			   diff: ($c.diff | getpath($q)), diff_ci: ($c.ci | getpath($q)),
			   significant: ($c.significant | getpath($q))}] else null end)}'
	done
} | jq -s '{model: $model, unlabeled: $n, bench: $bench, seed: $seed, seeds: $seeds, dpo: $dpo,
	    interval: "95 %: bootstrap over the bench images, the seeds drawn too (seva-eval --compare)", variants: .}' \
	--arg model "$model" --argjson n "$n" --argjson bench "$bench" --argjson seed "$seed" --argjson seeds "$seeds" \
	--arg dpo "$dpo_opts" >"$out/ablation.json.tmp"
mv "$out/ablation.json.tmp" "$out/ablation.json"

# Columns: variant, recipe, pairs, the bench metrics as mean ± half the
# interval (3 decimals, '*' when the difference from the base is significant), a note.
rows='def f: (. * 1000 | round) as $n | ($n / 1000 | floor | tostring) + "." + ($n % 1000 + 1000 | tostring | .[1:]);
	def cell: if . == null or .mean == null then "-" else (.mean | f) +
	  (if .ci then "±" + ((.ci[1] - .ci[0]) / 2 | f) else "" end) + (if .significant then "*" else "" end) end;
	.variants[] | [.variant, .recipe + (if .pairing != "" then " " + .pairing else "" end),
	  (if .pairs == null then "-" else (.pairs | round | tostring) end)] +
	  (if .cells then (.cells | map(cell)) else ["-", "-", "-", "-", "-", "-"] end) +
	  [if .status == "base" then "before DPO" elif .status == "no pairs" then "no pairs: nothing to train"
	   elif .status == "failed" then "failed: see \(.variant)/s*/seva.log" else "" end]'
head='["variant", "recipe", "pairs", "POPE-adv F1", "POPE-adv acc", "CHAIR_s", "CHAIR_i", "colour", "count", "note"]'
foot="mean over $seeds seed(s) ± half the 95 % interval (bootstrap over $bench bench images, seeds drawn too); * differs from the base (its interval excludes 0)"
{
	jq -r "$head, ($rows) | @tsv" "$out/ablation.json" |
		awk -F'\t' '{ printf "%-16s %-34s %6s %13s %13s %13s %13s %13s %13s  %s\n", $1, $2, $3, $4, $5, $6, $7, $8, $9, $10 }'
	echo "$foot"
} >"$out/ablation.txt"
{
	jq -r "$head, ($head | map(\"---\")), ($rows) | \"| \" + join(\" | \") + \" |\"" "$out/ablation.json"
	echo
	echo "$foot"
} >"$out/ablation.md"
cat "$out/ablation.txt"
say "done in $(( $(date +%s) - start ))s; every variant's runs and report.html are in $out/VARIANT/sSEED/"
[ "$failed" = 0 ] || die "$failed variant(s) failed"
