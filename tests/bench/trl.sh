#!/bin/bash
# trl.sh — TRL 1.16's own DPOTrainer (tests/bench/trl_dpo.py, the venv's
# torch 2.13, bf16 mixed precision) beside seva's bf16 DPO step
# (tests/bin/bench-engine --what dpo --precision bf16) on the same model
# shapes and the same pairs' shape, measured in the same run: pairs per
# second and CPU seconds per step, with the ratios (> 1: seva is faster).
# TRL refuses a precomputed reference for vision data (trl_dpo.py says
# what it answered), so its step is set beside seva's step with the
# reference's forward in it; seva's step as seva-dpo runs it (the
# reference scored once) is shown too.
#
#   trl.sh [-n STEPS] [CONFIG...]   (default: 2 timed steps, small.json)
cd "$(dirname "$0")/../.." || exit 1
SEVA_SHARED="${SEVA_SHARED:-$(cd .. && pwd)/shared}"
VPY=tests/vendor/venv/bin/python
steps=2
if [ "$1" = -n ]; then
	steps=$2
	shift 2
fi
configs=("$@")
[ ${#configs[@]} -gt 0 ] || configs=("$SEVA_SHARED"/bench/configs/small.json)
if [ ! -x "$VPY" ]; then
	echo "trl: skipped (no $VPY: tests/deps.sh makes it)"
	exit 0
fi
. tests/bench/build.bash
bench_build engine || exit 1

tmp=$(mktemp -d) || exit 1
trap 'rm -rf "$tmp"' EXIT
echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
tests/bin/bench-engine -j 2 -n "$steps" --what dpo --precision bf16 "${configs[@]}" >"$tmp/seva.json" || exit 1
for c in "${configs[@]}"; do
	"$VPY" tests/bench/trl_dpo.py "$c" "$steps" 2 | grep '^{"' >>"$tmp/trl.json" ||
		echo "(trl_dpo.py $c failed)"
done
echo "load average at end:   $(cut -d' ' -f1-3 /proc/loadavg)"
echo "seva: $(head -1 "$tmp/seva.json" | jq -r .precision_info)"
jq -r 'select(.what == "trl_precompute") | "TRL \(.trl) on \(.config), precompute_ref_log_probs=True: " +
	(if .accepted then "accepted" else "refused (\(.error))" end)' "$tmp/trl.json"
echo
jq -rs '
	def f2: if . == null or . < 0 then "-" else . * 100 | round / 100 end;
	(map(select(.src == "seva"))) as $s | (map(select(.src == "trl" and .what == "trl_dpo_step"))) as $t |
	(["figure", "seva bf16", "TRL bf16", "ratio", "ratio/cpu"] | @tsv),
	($t[] | . as $p | .config as $c |
	 ($s | map(select(.config == $c and .what == "dpo_step")) | .[0]) as $sd |
	 ($s | map(select(.config == $c and .what == "dpo_step_ref_precomputed")) | .[0]) as $sq |
	 ([$c + " pairs/s, reference per step", ($sd.pairs_per_s | f2), ($p.pairs_per_s | f2),
	   ($sd.pairs_per_s / $p.pairs_per_s | f2), ($p.cpu_s_per_step / $sd.cpu_s_per_step | f2)] | @tsv),
	 ([$c + " CPU s/step, reference per step", ($sd.cpu_s_per_step | f2), ($p.cpu_s_per_step | f2),
	   "", ""] | @tsv),
	 ([$c + " pairs/s, seva ref once*", ($sq.pairs_per_s | f2), ($p.pairs_per_s | f2),
	   ($sq.pairs_per_s / $p.pairs_per_s | f2), ($p.cpu_s_per_step / $sq.cpu_s_per_step | f2)] | @tsv))
' <(jq -c '. + {src: "seva"}' "$tmp/seva.json"; jq -c '. + {src: "trl"}' "$tmp/trl.json") |
	column -t -s "$(printf '\t')"
echo
echo "Both sides: 8 pairs of image + 32 prompt + 32 answer tokens, projector and decoder"
echo "trained, the tower frozen, 2 threads; mean of $steps timed step(s) after one warm-up."
echo "ratio: seva/TRL pairs per wall second; ratio/cpu: TRL's CPU seconds per step over"
echo "seva's (all threads of each process). *: seva's step with the reference scored once"
echo "before training (seva-dpo's way), against TRL's step with the reference's forward."
echo "raw:"
cat "$tmp/seva.json" "$tmp/trl.json"
