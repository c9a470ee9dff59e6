#!/bin/bash
# report.sh — a static HTML page for a SeVa run directory.
#
#   pipelines/report.sh [-n PAIRS] [-o FILE] RUNDIR
#
# Reads what pipelines/seva.sh leaves in RUNDIR — eval.base.json and
# eval.aligned.json (seva-eval --json), compare.json (seva-eval --compare
# --json; made from the two when missing), dpo.jsonl (seva-dpo --metrics),
# pairs.msgpack (seva-pair), augmented.msgpack (seva-augment) and pair.log — and
# writes RUNDIR/report.html: the bench metrics before and after DPO with the
# 95 % interval of each difference (coloured only where it excludes 0), the DPO
# curves (loss, rewards/accuracies, rewards/margins, logps/chosen and
# logps/rejected, lr and grad_norm against step, drawn with gnuplot), the
# run's DPO settings (aligned/training_args.json) and a gallery of the first PAIRS pairs (default 24): clean image,
# augmented view, question, chosen and rejected answer. Images and plots are
# files in RUNDIR/report/ beside the page; nothing is fetched from the network.
# A missing input leaves its section with a note instead of failing the page.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
top=$(dirname "$here")
export PATH="$top/bin:$PATH"

npairs=24
out=

usage() { sed -n '3,17p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
die() { echo "report.sh: $*" >&2; exit 1; }
while [ $# -gt 0 ]; do
	case $1 in
	-n) [ $# -ge 2 ] || usage; npairs=$2; shift 2 ;;
	-o) [ $# -ge 2 ] || usage; out=$2; shift 2 ;;
	-h|--help) usage ;;
	-*) echo "report.sh: unknown option '$1'" >&2; usage ;;
	*) break ;;
	esac
done
[ $# -eq 1 ] || usage
case $npairs in ''|*[!0-9]*) echo "report.sh: -n wants a number, not '$npairs'" >&2; usage ;; esac
run=${1%/}
[ -d "$run" ] || die "$run: no such run directory"
[ -n "$out" ] || out=$run/report.html
for t in jq gnuplot seva-cat; do
	command -v $t >/dev/null || die "$t not found (make deps; make)"
done

assets=$(dirname "$out")/report
rm -rf "$assets"
mkdir -p "$assets"
tmp=$(mktemp -d "${TMPDIR:-/tmp}/seva-report.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
html=$tmp/page.html

# -- The metrics table ---------------------------------------------------------
# One row per metric; lower is better for CHAIR, higher for the rest. The
# difference is green when the aligned model is better and red when worse, and
# only where its 95 % interval (paired bootstrap over images, compare.json)
# excludes 0: a change inside the noise stays black.
metrics_table() {
	local base=$run/eval.base.json aligned=$run/eval.aligned.json cmp=$run/compare.json
	: >"$tmp/compare.err"
	if [ ! -s "$base" ] || [ ! -s "$aligned" ]; then
		echo "<p class=note>No metrics: $(basename "$base") or $(basename "$aligned") is missing in the run directory.</p>"
		return
	fi
	if [ ! -s "$cmp" ]; then
		cmp=$tmp/compare.json
		seva-eval --compare --json -o "$cmp" "$base" "$aligned" 2>"$tmp/compare.err" || : >"$cmp"
	fi
	[ -s "$cmp" ] || echo '{}' >"$cmp"
	jq -n -r --slurpfile b "$base" --slurpfile a "$aligned" --slurpfile c "$cmp" --rawfile err "$tmp/compare.err" '
	def rows: [
	  (["random", "popular", "adversarial"][] as $s |
	    (["accuracy", "Accuracy"], ["precision", "Precision"], ["recall", "Recall"],
	     ["f1", "F1"], ["yes_ratio", "Yes ratio"]) as [$k, $name] |
	    {group: "POPE \($s) (n=\($b[0].pope[$s].n // $a[0].pope[$s].n // 0))",
	     name: $name, path: ["pope", $s, $k], better: (if $k == "yes_ratio" then 0 else 1 end)}),
	  {group: "CHAIR (n=\($b[0].chair.n // 0))", name: "CHAIR<sub>s</sub>", path: ["chair", "chair_s"], better: -1},
	  {group: "CHAIR (n=\($b[0].chair.n // 0))", name: "CHAIR<sub>i</sub>", path: ["chair", "chair_i"], better: -1},
	  {group: "CHAIR (n=\($b[0].chair.n // 0))", name: "Object recall", path: ["chair", "recall"], better: 1},
	  {group: "Exact match", name: "Colour (n=\($b[0].color.n // 0))", path: ["color", "accuracy"], better: 1},
	  {group: "Exact match", name: "Count (n=\($b[0].count.n // 0))", path: ["count", "accuracy"], better: 1}
	];
	def f: if . == null then "–" else (. * 10000 | round) as $n | (if $n < 0 then -$n else $n end) as $m |
	  (if $n < 0 then "−" else "" end) + ($m / 10000 | floor | tostring) + "." + ($m % 10000 + 10000 | tostring | .[1:]) end;
	def signed: if . == null then "–" elif . > 0 then "+" + (. | f) else . | f end;
	def p: if . == null then "" elif . < 0.001 then "<0.001" else (. * 1000 | round / 1000 | tostring) end;
	def cls($d; $sig; $better): if $d == null or $sig != true then ""
	  elif $better == 0 then "differs" elif ($d * $better) > 0 then "up" else "down" end;
	($c[0] | has("ci")) as $have |
	[rows[] | . as $r | . + {x: ($b[0] | getpath($r.path)), y: ($a[0] | getpath($r.path)),
	   ci: ($c[0].ci // {} | getpath($r.path)), sig: ($c[0].significant // {} | getpath($r.path)),
	   p: ($c[0].mcnemar // {} | getpath($r.path) | if . == null then null else .p end)}
	  | select(.x != null or .y != null)] as $r |
	($r | reduce (.[] | .group) as $g ([]; if index([$g]) then . else . + [$g] end)) as $order |
	"<table class=metrics>",
	"<thead><tr><th></th><th>Metric</th><th>Base</th><th>Aligned</th><th>Δ</th><th>95 % interval</th><th>McNemar p</th></tr></thead><tbody>",
	($order[] as $g | [$r[] | select(.group == $g)] as $rows | range(0; $rows | length) as $i | $rows[$i] |
	  (if .x != null and .y != null then .y - .x else null end) as $d |
	  "<tr\(if $i == 0 then " class=first" else "" end)>" +
	  (if $i == 0 then "<th rowspan=\($rows | length)>\(.group | @html)</th>" else "" end) +
	  "<td>\(.name)</td><td>\(.x | f)</td><td>\(.y | f)</td>" +
	  "<td class=\"\(cls($d; .sig; .better))\">\($d | signed)</td>" +
	  "<td class=ci>\(if .ci then "[\(.ci[0] | signed), \(.ci[1] | signed)]" else "–" end)</td>" +
	  "<td class=p>\(.p | p)</td></tr>"),
	"</tbody></table>",
	(if $have then
	  "<p class=note>Δ is aligned − base. The interval is a paired bootstrap over the \($c[0].images) bench images " +
	  "(\($c[0].bootstrap.resamples) resamples, seed \($c[0].bootstrap.seed); all questions of an image drawn together); " +
	  "Δ is coloured only where it excludes 0: green where the aligned model is better (higher, or lower for CHAIR), " +
	  "red where it is worse, blue for a yes ratio that moved (best near 0.5). " +
	  "McNemar p: the exact test on the questions that changed (binary metrics).</p>"
	 else
	  "<p class=note>Δ is aligned − base. No intervals, so nothing is coloured: " +
	  ($err | split("\n") | map(select(. != "")) | last // "compare.json is missing" | @html) + "</p>"
	 end)
	' || die "$base, $aligned: not metrics as seva-eval --json writes them"
}

# -- The DPO curves --------------------------------------------------------------
# dpo.jsonl → a TSV of step and the three curves, then one gnuplot PNG each, the
# raw values thin and a running mean (window: a tenth of the steps) thick; the
# evaluation lines (seva-dpo --eval, --eval-split) on the same axes as points.
dpo_plots() {
	local m=$run/dpo.jsonl
	if [ ! -s "$m" ]; then
		echo "<p class=note>No DPO metrics: $(basename "$m") is missing or empty (no pairs, or DPO did not run).</p>"
		return
	fi
	jq -r 'select(type == "object" and .step != null and has("eval_loss") == false and
		has("best_global_step") == false) |
		[.step, .loss, .["rewards/accuracies"], .["rewards/margins"], .["rewards/chosen"], .["rewards/rejected"],
		 .["logps/chosen"], .["logps/rejected"], .grad_norm, .lr]
		| map(if . == null then "NaN" else tostring end) | @tsv' "$m" >"$tmp/dpo.tsv" ||
		die "$m: not JSON lines as seva-dpo --metrics writes them"
	local steps
	steps=$(wc -l <"$tmp/dpo.tsv")
	if [ "$steps" -eq 0 ]; then
		echo "<p class=note>$(basename "$m") has no lines with a step.</p>"
		return
	fi
	# The held-out pairs' curves, if seva-dpo evaluated: step, loss, accuracies, margins.
	jq -r 'select(type == "object" and has("eval_loss")) |
		[.step, .eval_loss, .["eval_rewards/accuracies"], .["eval_rewards/margins"]]
		| map(if . == null then "NaN" else tostring end) | @tsv' "$m" >"$tmp/eval.tsv"
	local ev_loss= ev_acc= ev_margin=
	if [ -s "$tmp/eval.tsv" ]; then
		ev_loss=", \"$tmp/eval.tsv\" using 1:2 with linespoints pt 7 ps 0.6 lw 1.5 lc rgb \"#e6550d\" title \"eval_loss\""
		ev_acc=", \"$tmp/eval.tsv\" using 1:3 with linespoints pt 7 ps 0.6 lw 1.5 lc rgb \"#e6550d\" title \"eval\""
		ev_margin=", \"$tmp/eval.tsv\" using 1:4 with linespoints pt 7 ps 0.6 lw 1.5 lc rgb \"#e6550d\" title \"eval\""
	fi
	local w=$(( steps / 10 > 1 ? steps / 10 : 1 ))
	# Running mean of columns 2..9 over the last $w steps (NaN stays out of it;
	# the learning rate, column 10, is drawn as it is).
	awk -F'\t' -v w="$w" 'BEGIN { OFS = "\t" }
	{
		printf "%s", $1
		for (c = 2; c <= 9; c++) {
			v[c, NR % w] = $c; s = 0; k = 0
			for (j = 0; j < w; j++) if ((c, j) in v && v[c, j] != "NaN") { s += v[c, j]; k++ }
			printf "\t%s", (k ? s / k : "NaN")
		}
		printf "\n"
	}' "$tmp/dpo.tsv" >"$tmp/dpo.mean.tsv"
	local term='pngcairo size 360,290 font "DejaVu Sans,10"'
	gnuplot -e 'set terminal' 2>&1 | grep -q pngcairo || term='png size 360,290'
	gnuplot <<-EOF 2>"$tmp/gnuplot.err" || { cat "$tmp/gnuplot.err" >&2; die "gnuplot failed"; }
	set terminal $term
	set datafile separator "\t"
	set datafile missing "NaN"
	set grid lc rgb "#dddddd"
	set border lc rgb "#555555"
	set key top right
	set xlabel "step"
	set output "$assets/loss.png"
	set title "loss"
	plot "$tmp/dpo.tsv" using 1:2 with lines lw 1 lc rgb "#9ecae1" title "loss", \
	     "$tmp/dpo.mean.tsv" using 1:2 with lines lw 2.5 lc rgb "#08519c" title "running mean ($w)", \
	     log(2) with lines dt 2 lc rgb "#888888" title "log 2"$ev_loss
	set output "$assets/accuracies.png"
	set title "rewards/accuracies"
	set yrange [-0.05:1.05]
	set key bottom right
	plot "$tmp/dpo.tsv" using 1:3 with lines lw 1 lc rgb "#a1d99b" title "rewards/accuracies", \
	     "$tmp/dpo.mean.tsv" using 1:3 with lines lw 2.5 lc rgb "#006d2c" title "running mean ($w)"$ev_acc
	set output "$assets/margins.png"
	set title "rewards/margins (chosen − rejected)"
	set autoscale y
	# four entries: below the plot, under the step label rather than on it
	set key below maxrows 2 font ",8" samplen 2 spacing 0.9 height 0.6
	set xlabel "step" offset 0,0.4
	set bmargin 6.2
	plot "$tmp/dpo.tsv" using 1:4 with lines lw 1 lc rgb "#fdae6b" title "margins", \
	     "$tmp/dpo.mean.tsv" using 1:4 with lines lw 2.5 lc rgb "#a63603" title "running mean ($w)", \
	     "$tmp/dpo.mean.tsv" using 1:5 with lines lw 1.5 dt 3 lc rgb "#31a354" title "chosen (mean)", \
	     "$tmp/dpo.mean.tsv" using 1:6 with lines lw 1.5 dt 3 lc rgb "#de2d26" title "rejected (mean)", \
	     0 with lines dt 2 lc rgb "#888888" notitle$ev_margin
	set output "$assets/logps.png"
	set title "logps (summed over each answer)"
	plot "$tmp/dpo.tsv" using 1:7 with lines lw 1 lc rgb "#a1d99b" title "logps/chosen", \
	     "$tmp/dpo.tsv" using 1:8 with lines lw 1 lc rgb "#fc9272" title "logps/rejected", \
	     "$tmp/dpo.mean.tsv" using 1:7 with lines lw 2.5 lc rgb "#006d2c" title "chosen (mean)", \
	     "$tmp/dpo.mean.tsv" using 1:8 with lines lw 2.5 lc rgb "#a50f15" title "rejected (mean)"
	set output "$assets/optim.png"
	set termoption noenhanced
	set title "grad_norm (before clipping) and lr"
	set ytics nomirror
	set y2tics
	set format y2 "%.0e"
	set ylabel "grad_norm" offset 1,0
	set y2label "lr" offset -1,0
	plot "$tmp/dpo.tsv" using 1:9 with lines lw 1 lc rgb "#bcbddc" title "grad_norm", \
	     "$tmp/dpo.mean.tsv" using 1:9 with lines lw 2.5 lc rgb "#54278f" title "running mean ($w)", \
	     "$tmp/dpo.tsv" using 1:10 axes x1y2 with lines lw 1.5 dt 2 lc rgb "#333333" title "lr (right)"
	EOF
	echo "<div class=plots>"
	local p
	for p in loss accuracies margins logps optim; do
		echo "<img src=\"report/$p.png\" alt=\"DPO $p against step\" width=360 height=290>"
	done
	echo "</div>"
	jq -s -r '(map(select(.step != null and has("eval_loss") == false and has("best_global_step") == false))
		| .[-1] as $l |
		"<p class=note>\(length) logged steps; last step \($l.step): loss \($l.loss // "–" | tostring | .[0:6]), " +
		"rewards/accuracies \($l["rewards/accuracies"] // "–" | tostring | .[0:6]), " +
		"rewards/margins \($l["rewards/margins"] // "–" | tostring | .[0:6]).") +
		(map(select(has("eval_loss"))) | if length == 0 then "" else
		" \(length) evaluations on held-out pairs (orange), the last eval_loss \(.[-1].eval_loss | tostring | .[0:6])." end) +
		(map(select(has("best_global_step"))) | if length == 0 then "" else
		" The model kept is that of step \(.[-1].best_global_step) (--keep best)." end) + "</p>"' "$m"
}

# -- The configuration -----------------------------------------------------------
# What the run was: seva-dpo's settings as it wrote them beside the model
# (aligned/training_args.json: the command line, the seva version, every
# setting) and the augmentation recipes of the pairs, counted.
config_block() {
	local args=$run/aligned/training_args.json pairs=$run/pairs.msgpack
	if [ -s "$args" ] && jq -e 'type == "object"' "$args" >/dev/null 2>&1; then
		jq -r '
		"<p class=note>The DPO run as \(.tool // "seva-dpo") wrote it in aligned/training_args.json" +
		  (if .seva_version then " (seva \(.seva_version | tostring | @html))" else "" end) + ":</p>",
		(if .command then "<pre class=log>" + (.command | map(tostring) | join(" ") | @html) + "</pre>" else empty end),
		"<div class=config>",
		(to_entries[] | select(.key != "command" and .key != "tool" and .key != "seva_version") |
		  "<div><b>\(.key | @html)</b> \(.value | if type == "string" then . else tojson end | @html)</div>"),
		"</div>"' "$args"
	else
		echo "<p class=note>No DPO settings: aligned/training_args.json is missing or not JSON (DPO did not run, or an older seva).</p>"
	fi
	if [ -s "$pairs" ]; then
		{ seva-cat -q --jsonl -f pair.json "$pairs" || [ $? = 141 ]; } |
			jq -r '.["pair.json"].recipe // {} | if type == "object" then .recipe // "none" else tostring end' |
			sort | uniq -c | sort -rn >"$tmp/recipes"
		if [ -s "$tmp/recipes" ]; then
			echo "<p class=note>Augmentation recipes of the pairs (count, recipe):</p>"
			echo "<pre class=log>$(jq -Rr @html <"$tmp/recipes")</pre>"
		fi
	fi
}

# -- The gallery -----------------------------------------------------------------
# The first $npairs pairs as JSON lines with base64 images. seva-cat is stopped
# by a closed pipe once jq has enough (exit 141 is expected there).
b64file() { # JQ-FILTER JSONFILE OUT: decode one base64 field into a file
	jq -j "$1" "$2" | base64 -d >"$3"
}
gallery() {
	local pairs=$run/pairs.msgpack
	if [ ! -s "$pairs" ]; then
		echo "<p class=note>No pairs: $(basename "$pairs") is missing or empty (every answer pair was identical, or pairing did not run).</p>"
		return
	fi
	{ seva-cat -q --jsonl --base64 -f png,jpg,jpeg,aug.png,prompt.txt,chosen.txt,rejected.txt,pair.json,json "$pairs" ||
		[ $? = 141 ]; } | jq -c -n --argjson n "$npairs" 'limit($n; inputs)' >"$tmp/pairs.jsonl"
	# Augmented views the pairs did not keep come from augmented.msgpack by key.
	jq -r 'select(has("aug.png") | not) | .["pair.json"].source // .__key__' "$tmp/pairs.jsonl" | sort -u >"$tmp/want"
	: >"$tmp/aug.jsonl"
	if [ -s "$tmp/want" ] && [ -s "$run/augmented.msgpack" ]; then
		jq -R . "$tmp/want" | jq -s 'map({(.): true}) | add' >"$tmp/want.json"
		seva-cat -q --jsonl --base64 -f aug.png "$run/augmented.msgpack" |
			jq -c --slurpfile w "$tmp/want.json" 'select($w[0][.__key__] and has("aug.png"))' >"$tmp/aug.jsonl"
	fi
	local total shown i=0 line img aug ext key
	total=$({ seva-cat -q --jsonl -f pair.json "$pairs" || [ $? = 141 ]; } | wc -l)
	shown=$(wc -l <"$tmp/pairs.jsonl")
	echo "<p class=note>Showing $shown of $total pairs. Chosen is the answer on the clean image, rejected the answer on the augmented view (or, per pair.json, swapped or a random negative).$(
		jq -s -r 'if any(.[]; .["pair.json"].recipe.preview == true) then
		" \"(preview)\": the recipe adds its noise to the model'"'"'s normalized input tensor (SeVa'"'"'s way, space=normalized), which seva-generate builds; the image shown is a rendering of that noise on 8-bit pixels, not what the model saw."
		else "" end' "$tmp/pairs.jsonl")</p>"
	echo "<div class=gallery>"
	while IFS= read -r line; do
		printf '%s\n' "$line" >"$tmp/p.json"
		img='' aug=''
		for ext in png jpg jpeg; do
			if jq -e --arg f "$ext" 'has($f)' "$tmp/p.json" >/dev/null; then
				img=report/pair-$i.$ext
				b64file ".[\"$ext\"].base64" "$tmp/p.json" "$(dirname "$out")/$img"
				break
			fi
		done
		if jq -e 'has("aug.png")' "$tmp/p.json" >/dev/null; then
			aug=report/pair-$i.aug.png
			b64file '.["aug.png"].base64' "$tmp/p.json" "$(dirname "$out")/$aug"
		else
			key=$(jq -r '.["pair.json"].source // .__key__' "$tmp/p.json")
			jq -c --arg k "$key" 'select(.__key__ == $k)' "$tmp/aug.jsonl" | head -1 >"$tmp/a.json"
			if [ -s "$tmp/a.json" ]; then
				aug=report/pair-$i.aug.png
				b64file '.["aug.png"].base64' "$tmp/a.json" "$(dirname "$out")/$aug"
			fi
		fi
		jq -r --arg img "$img" --arg aug "$aug" '
		def fig($src; $cap): if $src == "" then "<figure class=missing><div>no image</div><figcaption>\($cap)</figcaption></figure>"
		  else "<figure><img src=\"\($src)\" alt=\"\($cap)\"><figcaption>\($cap)</figcaption></figure>" end;
		(.["pair.json"] // {}) as $p |
		($p.recipe.recipe // $p.recipe // "" | if type == "string" then . else tojson end) as $recipe |
		"<div class=pair>",
		"<div class=key>\(.__key__ | @html)\(if $p.mode and $p.mode != "augment" then " · " + ($p.mode | @html) else "" end)\(if $p.swap then " · swapped" else "" end)</div>",
		"<div class=views>" + fig($img; "clean") +
		  fig($aug; "augmented" + (if $recipe != "" then ": " + ($recipe | @html) else "" end) +
		    (if $p.recipe.preview then " (preview)" else "" end)) + "</div>",
		"<p class=q><b>Q</b> \(.["prompt.txt"] // .json.prompt // "" | @html)</p>",
		"<p class=chosen><b>chosen</b> \(.["chosen.txt"] // "" | @html)</p>",
		"<p class=rejected><b>rejected</b> \(.["rejected.txt"] // "" | @html)</p>",
		"</div>"' "$tmp/p.json"
		i=$((i + 1))
	done <"$tmp/pairs.jsonl"
	echo "</div>"
}

# -- The page --------------------------------------------------------------------
name=$(basename "$(cd "$run" && pwd)")
{
	cat <<-EOF
	<!DOCTYPE html>
	<html lang=en>
	<head>
	<meta charset=utf-8>
	<title>SeVa run $(printf '%s' "$name" | jq -Rr @html)</title>
	<style>
	body { font: 15px/1.45 "DejaVu Sans", sans-serif; color: #222; margin: 24px auto; max-width: 1160px; padding: 0 16px; }
	h1 { font-size: 24px; margin: 0 0 4px; } h2 { font-size: 19px; border-bottom: 1px solid #ccc; padding-bottom: 3px; margin-top: 28px; }
	.note { color: #555; font-size: 13px; }
	pre.log { background: #f6f6f6; padding: 6px 10px; font-size: 12px; white-space: pre-wrap; }
	table.metrics { border-collapse: collapse; font-variant-numeric: tabular-nums; }
	table.metrics th, table.metrics td { padding: 3px 12px; border-bottom: 1px solid #eee; text-align: right; }
	table.metrics thead th { border-bottom: 2px solid #999; }
	table.metrics tbody th { text-align: left; vertical-align: top; font-weight: 600; }
	table.metrics td:nth-child(2), table.metrics tr:not(.first) td:first-child { text-align: left; }
	tr.first > * { border-top: 1px solid #bbb; }
	td.up { color: #0a7d28; font-weight: 600; } td.down { color: #c0161b; font-weight: 600; }
	td.differs { color: #1f5fbf; font-weight: 600; } td.ci, td.p { color: #555; font-size: 13px; }
	.plots { display: flex; flex-wrap: wrap; gap: 10px; }
	.plots img { border: 1px solid #ddd; }
	.gallery { display: grid; grid-template-columns: repeat(auto-fill, minmax(360px, 1fr)); gap: 14px; }
	.pair { border: 1px solid #ddd; border-radius: 6px; padding: 10px; background: #fcfcfc; }
	.pair .key { font: 12px monospace; color: #666; margin-bottom: 6px; }
	.views { display: flex; gap: 10px; }
	figure { margin: 0; text-align: center; font-size: 12px; color: #555; max-width: 170px; }
	figure img, figure.missing div { width: 160px; height: 160px; object-fit: contain; image-rendering: pixelated; border: 1px solid #ccc; background: #fff; }
	figure.missing div { display: flex; align-items: center; justify-content: center; color: #999; }
	figcaption { overflow-wrap: anywhere; }
	.pair p { margin: 6px 0 0; font-size: 13px; max-height: 5.8em; overflow: auto; overflow-wrap: anywhere; }
	.pair p b { display: inline-block; min-width: 62px; font-size: 11px; text-transform: uppercase; letter-spacing: .03em; }
	.config { columns: 3 240px; column-gap: 24px; font-size: 13px; }
	.config div { break-inside: avoid; overflow-wrap: anywhere; } .config b { font-weight: 600; color: #444; }
	.chosen b { color: #0a7d28; } .rejected b { color: #c0161b; } .q b { color: #333; }
	</style>
	</head>
	<body>
	<h1>SeVa run <code>$(printf '%s' "$name" | jq -Rr @html)</code></h1>
	<p class=note>Written by pipelines/report.sh from $(printf '%s' "$run" | jq -Rr @html) on $(date -u '+%Y-%m-%d %H:%M UTC').</p>
	EOF
	if [ -s "$run/pair.log" ]; then
		echo "<pre class=log>$(grep -v '^$' "$run/pair.log" | tail -3 | jq -Rr @html)</pre>"
	fi
	echo "<h2>Bench: base model and aligned model</h2>"
	metrics_table
	echo "<h2>Configuration</h2>"
	config_block
	echo "<h2>DPO training</h2>"
	dpo_plots
	echo "<h2>Pairs</h2>"
	gallery
	echo "</body>"
	echo "</html>"
} >"$html"

mv "$html" "$out.tmp"
mv "$out.tmp" "$out"
echo "report.sh: wrote $out" >&2
