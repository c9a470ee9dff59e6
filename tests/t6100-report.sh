#!/bin/bash
# pipelines/report.sh: a fake run directory (synthesised samples, answers put
# in by a seva-cat JSON-lines round trip, hand-written DPO metrics), then the
# page's table, plots and gallery; bad and missing inputs; a headless Chromium
# screenshot when /usr/bin/chromium is installed.
. "$(dirname "$0")/lib.sh"
REPORT=$TOP/pipelines/report.sh
PY=/usr/bin/python3

# -- A run directory as pipelines/seva.sh leaves it ----------------------------------
mkdir run
seva-synth --split unlabeled -n 10 -s 4 >run/unlabeled.msgpack
seva-augment -q -r diffusion:t=500 -s 4 run/unlabeled.msgpack >run/augmented.msgpack
# Answers: the augmented view hallucinates a star, except on every third sample
# (identical answers: seva-pair drops those). One answer carries HTML to escape.
seva-cat --jsonl --base64 run/augmented.msgpack >aug.jsonl
jq -c '(.__key__ | tonumber) as $i |
	. + {"response.txt": "I see <b>shapes</b> & \"things\" number \($i).",
	     "aug.response.txt": (if $i % 3 == 0 then "I see <b>shapes</b> & \"things\" number \($i)."
	                          else "I see a star and shapes number \($i)." end)}' aug.jsonl >gen.jsonl
seva-cat gen.jsonl >run/generated.msgpack
seva-pair run/generated.msgpack >run/pairs.msgpack 2>run/pair.log
seva-cat --jsonl run/pairs.msgpack >pairs.jsonl
npairs=$(wc -l <pairs.jsonl)
check "the fake run has pairs to show (6 of 10)" "$npairs" = 6

# Bench answers on 12 images: the base model says yes to everything and
# hallucinates a star, names colours and counts right; the aligned one gets
# POPE right and stops hallucinating (better, beyond noise), answers every
# count "Zero." (worse, beyond noise) and one colour wrong (a change the
# interval cannot tell from noise: not coloured).
seva-synth --split bench -n 12 -s 7 >bench.msgpack
seva-cat --jsonl --base64 bench.msgpack >bench.jsonl
answer() { # MODE: base | aligned | quiet (the base but for one colour)
	jq -c --arg m "$1" '.json.image_id as $img | . + {"response.txt": (.json.truth |
		if .task == "pope" then (if $m != "aligned" or .label == "yes" then "Yes." else "No." end)
		elif .task == "describe" then "There is a " + (.objects | join(" and a ")) + (if $m != "aligned" then " and a star." else "." end)
		elif .task == "color" then (if $m != "base" and $img == "000003" then "Purple." else .answer end)
		else (if $m == "aligned" then "Zero." else .answer end) end)}' bench.jsonl >"bench.$1.jsonl"
	seva-cat "bench.$1.jsonl" >"run/bench.$1.msgpack"
	seva-eval --json -o "run/eval.$1.json" "run/bench.$1.msgpack"
}
answer base
answer aligned

# DPO metrics as seva-dpo --metrics writes them: loss from log 2 down, rewards up.
jq -n -c 'range(1; 41) as $s | ($s / 40) as $t |
	{step: $s, epoch: $t, loss: (0.6931471805599453 * (1 - 0.8 * $t)),
	 "rewards/chosen": (0.5 * $t), "rewards/rejected": (-1.5 * $t), "rewards/accuracies": ([1, $t * 1.3] | min),
	 "rewards/margins": (2 * $t), "logps/chosen": (-20 + 2 * $t), "logps/rejected": (-18 - 10 * $t),
	 lr: (1e-4 * ([1, $s / 4] | min)), grad_norm: (1 + 1 / $s)}' >run/dpo.jsonl
# The settings seva-dpo writes beside the model: one real step on the pairs
tiny_base base
seva-dpo -q -j 1 -m base -o run/aligned --max-steps 1 -b 2 --beta 0.25 --lora 4 -s 11 \
	run/pairs.msgpack 2>dpo.err || { cat dpo.err; exit 1; }

# -- The page -----------------------------------------------------------------------
expect "report.sh RUNDIR" "$REPORT" run
check "report.html written" -s run/report.html
H=run/report.html
check "one metrics table" "$(grep -c '<table class=metrics>' $H)" = 1
f1() { jq -r ".pope.adversarial.f1 * 10000 | round" "run/eval.$1.json"; }
b=$(f1 base) a=$(f1 aligned)
check "adversarial F1 differs between base and aligned" "$b" != "$a"
fmt() { printf '%d.%04d' $(($1 / 10000)) $(($1 % 10000)); }
want="<td>F1</td><td>$(fmt "$b")</td><td>$(fmt "$a")</td><td class=\"up\">+$(fmt $((a - b)))</td>"
if grep -qF "$want" $H; then ok "adversarial F1 row: base, aligned, green difference"
else not_ok "adversarial F1 row"; { echo "want: $want"; grep -F '<td>F1</td>' $H; } | diag; fi
check "POPE, CHAIR and exact-match rows" "$(grep -c -E 'POPE (random|popular|adversarial)|CHAIR<sub>[si]</sub>|Colour \(n=|Count \(n=' $H)" = 7
check "CHAIR_s fell to 0: counted as better" "$(grep -c "CHAIR<sub>s</sub></td><td>0\.[0-9]*</td><td>0\.0000</td><td class=\"up\">−0\.[0-9]*</td>" $H)" = 1
check "count fell to 0: worse beyond noise, red" "$(grep -c '<td>Count (n=12)</td><td>1\.0000</td><td>0\.0000</td><td class="down">−1\.0000</td>' $H)" = 1
check "the yes ratio moved: marked, neither better nor worse" "$(grep -c '<td>Yes ratio</td><td>1\.0000</td><td>0\.[0-9]*</td><td class="differs">' $H)" = 3
# One colour of twelve wrong: the interval reaches 0, so no colour.
cmpj=$(seva-eval --compare --json run/eval.base.json run/eval.aligned.json) || not_ok "seva-eval --compare"
check "colour: one of twelve worse, an interval that reaches 0" "$(jq -c '[.diff.color.accuracy, .ci.color.accuracy[1], .significant.color.accuracy]' <<<"$cmpj")" = "[-0.083333,0,false]"
check "... shown uncoloured, with its interval" "$(grep -c '<td>Colour (n=12)</td><td>1\.0000</td><td>0\.9167</td><td class="">−0\.0833</td><td class=ci>\[−0\.[0-9]*, 0\.0000\]</td>' $H)" = 1
ci=$(jq -r '.ci.pope.adversarial.f1 | map(. * 10000 | round) | map(if . > 0 then "+" else "" end + (. / 10000 | tostring)) | join(" ")' <<<"$cmpj")
lo=$(jq -r '.ci.pope.adversarial.f1[0] * 10000 | round' <<<"$cmpj") hi=$(jq -r '.ci.pope.adversarial.f1[1] * 10000 | round' <<<"$cmpj")
want="<td class=ci>[+$(fmt "$lo"), +$(fmt "$hi")]</td>"
if grep -qF "$want" $H; then ok "adversarial F1: the interval of seva-eval --compare ($ci)"
else not_ok "adversarial F1 interval"; { echo "want: $want"; grep -F '<td>F1</td>' $H; } | diag; fi
p=$(jq -r '.mcnemar.pope.adversarial.accuracy.p' <<<"$cmpj")
check "McNemar p shown where it is defined ($p)" "$(grep -c '<td>Accuracy</td>.*<td class=p>[<0-9.]*</td>' $H)" = 3
check "the note says how the intervals were made" "$(grep -c 'paired bootstrap over the 12 bench images (2000 resamples, seed 0' $H)" = 1
# A compare.json in the run directory (seva.sh writes one) is what the page shows.
mkdir run3
cp run/eval.*.json run3/
seva-eval --compare --json --boot 200 -s 3 -o run3/compare.json run3/eval.base.json run3/eval.aligned.json
expect "report from a run with compare.json" "$REPORT" run3
check "... its bootstrap is named" "$(grep -c 'paired bootstrap over the 12 bench images (200 resamples, seed 3' run3/report.html)" = 1
# Metrics saved before per-sample scores existed: differences, no intervals, no colour.
mkdir old
for m in base aligned; do jq 'del(.per_sample)' run/eval.$m.json >old/eval.$m.json; done
expect "report from metrics without per-sample scores" "$REPORT" old
check "... says why nothing is coloured" "$(grep -c 'No intervals, so nothing is coloured: .*no &quot;per_sample&quot; array' old/report.html)" = 1
check "... and colours nothing" "$(grep -c 'class="\(up\|down\|differs\)"' old/report.html)" = 0
for p in loss accuracies margins logps optim; do
	check "plot $p.png referenced" "$(grep -c "src=\"report/$p.png\"" $H)" = 1
	check "plot $p.png is a PNG" "$(head -c 8 run/report/$p.png | od -An -tx1 | tr -d ' \n')" = 89504e470d0a1a0a
	check "plot $p.png is not trivial (>4 KB)" "$(wc -c <run/report/$p.png)" -gt 4096
done
check "gallery: one card per pair" "$(grep -c '<div class=pair>' $H)" = "$npairs"
check "gallery: clean and augmented image per pair" "$(grep -o 'src="report/pair-[0-9]*\(\.aug\)\?\.png"' $H | sort -u | wc -l)" = $((2 * npairs))
missing=0
for f in $(grep -o 'src="report/[^"]*"' $H | sed 's/^src="//; s/"$//'); do
	[ -s "run/$f" ] || { missing=$((missing + 1)); echo "missing run/$f" | diag; }
done
check "every image the page names is beside it" $missing = 0
# The gallery's images are the stream's bytes: clean from pairs, augmented from
# augmented.msgpack by the pair's source key.
k=$(jq -r -s '.[1].__key__' pairs.jsonl)
check "2nd clean image is the pair's png" "$(sha256sum <run/report/pair-1.png | cut -c1-64)" = "$(jq -r -s '.[1].png.sha256' pairs.jsonl)"
check "2nd augmented view is augmented.msgpack's aug.png for $k" "$(sha256sum <run/report/pair-1.aug.png | cut -c1-64)" = \
	"$(seva-cat --jsonl -f aug.png run/augmented.msgpack | jq -r --arg k "$k" 'select(.__key__ == $k) | .["aug.png"].sha256')"
check "answers are HTML-escaped" "$(grep -c 'I see &lt;b&gt;shapes&lt;/b&gt; &amp; &quot;things&quot;' $H)" = "$npairs"
check "no raw markup from the data" "$(grep -c '<b>shapes' $H)" = 0
check "chosen and rejected shown" "$(grep -c '<p class=rejected><b>rejected</b> I see a star' $H)" = "$npairs"
check "the recipe is named" "$(grep -c 'augmented: diffusion:t=500 (preview)' $H)" = "$npairs"
check "\"(preview)\" is explained once" "$(grep -c '"(preview)": the recipe adds its noise to the model.s normalized input tensor' $H)" = 1
# The configuration block: seva-dpo's training_args.json as it was written
check "a configuration section" "$(grep -c '<h2>Configuration</h2>' $H)" = 1
check "... names the seva version" \
	"$(grep -c "aligned/training_args.json (seva $(jq -r .seva_version run/aligned/training_args.json))" $H)" = 1
check "... shows the command line" "$(grep -c '<pre class=log>seva-dpo -q -j 1 -m base -o run/aligned --max-steps 1 -b 2 --beta 0.25' $H)" = 1
check "... and every setting (beta, the LoRA rank, the seed among them)" \
	"$(grep -c -E '<div><b>(beta</b> 0.25|lora</b> 4|seed</b> 11)</div>' $H)" = 3
check "... as many as the file holds" "$(grep -o '<div><b>' $H | wc -l)" = \
	"$(jq '[keys[] | select(. != "command" and . != "tool" and . != "seva_version")] | length' run/aligned/training_args.json)"
check "... and the pairs' recipes counted" "$(grep -A1 'Augmentation recipes of the pairs' $H | grep -c "^<pre class=log> *$npairs diffusion:t=500")" = 1
check "no network references" "$(grep -c -E '(src|href)="(https?:)?//' $H)" = 0

# Pairs that kept aug.png use it; -n limits the gallery; -o puts the page elsewhere.
mkdir run2
cp run/eval.*.json run/dpo.jsonl run2/
seva-cat --jsonl --base64 run/augmented.msgpack | jq -c '{key: .__key__, aug: .["aug.png"]}' >augs.jsonl
seva-cat --jsonl --base64 run/pairs.msgpack | jq -c --slurpfile a augs.jsonl \
	'.__key__ as $k | . + {"aug.png": ($a | map(select(.key == $k))[0].aug)}' >p2.jsonl
seva-cat p2.jsonl >run2/pairs.msgpack
expect "pairs with aug.png, -n 2, -o" "$REPORT" -n 2 -o run2/page.html run2
check "gallery limited to 2" "$(grep -c '<div class=pair>' run2/page.html)" = 2
same "aug.png taken from the pair" run2/report/pair-1.aug.png run/report/pair-1.aug.png
check "showing 2 of 6" "$(grep -c 'Showing 2 of 6 pairs' run2/page.html)" = 1

# A run that evaluated on held-out pairs (seva-dpo --eval-split --keep best):
# the eval curves on the training curves' axes, the training steps counted
# without them, and the step kept named.
mkdir run3
cp run/eval.*.json run/pairs.msgpack run3/
{ cat run/dpo.jsonl; jq -n -c 'range(0; 41; 10) as $s | ($s / 40) as $t |
	{step: $s, epoch: $t, eval_loss: (0.6931471805599453 - 0.3 * $t + 0.4 * $t * $t),
	 "eval_rewards/accuracies": (0.5 + 0.2 * $t), "eval_rewards/margins": $t}';
  echo '{"step": 40, "best_global_step": 20, "best_metric": 0.64}'; } >run3/dpo.jsonl
expect "a run with evaluation lines" "$REPORT" run3
check "the training steps are counted without them" "$(grep -c '<p class=note>40 logged steps; last step 40' run3/report.html)" = 1
check "the evaluations and the model kept are named" \
	"$(grep -c '5 evaluations on held-out pairs (orange), the last eval_loss 0.7931.*The model kept is that of step 20 (--keep best)' run3/report.html)" = 1
for p in loss accuracies margins; do
	check "the eval curve is drawn on $p.png" "$(cmp -s run/report/$p.png run3/report/$p.png && echo same)" = ""
done

# A run that made no pairs, and bad command lines.
mkdir empty
: >empty/pairs.msgpack
expect "an empty run directory still gets a page" "$REPORT" empty
check "... saying what is missing" "$(grep -c -E 'No metrics|No DPO metrics|No pairs' empty/report.html)" = 3
expect_fail "no such run directory" 1 "$REPORT" nowhere
stderr_has "names it" "report.sh: nowhere: no such run directory"
expect_fail "no argument" 2 "$REPORT"
expect_fail "bad -n" 2 "$REPORT" -n x run
expect_fail "unknown option" 2 "$REPORT" --frobnicate run
mkdir bad
echo '{"step": 1, "loss": ' >bad/dpo.jsonl
expect_fail "a broken dpo.jsonl fails the run" 1 "$REPORT" bad
check "... and leaves no half-written page" ! -e bad/report.html

# -- Headless Chromium -----------------------------------------------------------
if [ -x /usr/bin/chromium ]; then
	prof=$(mktemp -d "$TMP/chromium.XXXXXX")
	# The timeout only stops a hung browser: at load 50 a screenshot took over 60 s.
	timeout 600 /usr/bin/chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
		--disable-background-networking --disable-component-update --disable-sync --disable-dev-shm-usage \
		--user-data-dir="$prof" --screenshot="$TMP/shot.png" --window-size=1200,2000 \
		"file://$TMP/run/report.html" >chromium.log 2>&1
	check "chromium wrote a screenshot" -s shot.png
	expect "screenshot: 1200x2000 PNG with a page on it (many colours, not one blank)" $PY - shot.png <<-'PY'
	import sys
	from PIL import Image
	im = Image.open(sys.argv[1]).convert("RGB")
	assert im.size == (1200, 2000), im.size
	colours = len(im.getcolors(1 << 24))
	white = sum(1 for p in im.getdata() if p == (255, 255, 255)) / (1200 * 2000)
	print(colours, white, file=sys.stderr)
	assert colours > 200, "only %d colours" % colours
	assert white < 0.97, "%.3f of the page is white" % white
	PY
	# The colours as rendered: green and red Δ in the table of the run above;
	# none on a page whose only change is inside the noise (one colour of
	# twelve; no pairs or curves there, whose labels are green and red too).
	mkdir quiet
	cp run/eval.base.json quiet/
	answer quiet
	cp run/eval.quiet.json quiet/eval.aligned.json
	"$REPORT" quiet 2>/dev/null
	check "quiet: the colour row changed, uncoloured" "$(grep -c '<td>Colour (n=12)</td><td>1\.0000</td><td>0\.9167</td><td class="">' quiet/report.html)" = 1
	timeout 600 /usr/bin/chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
		--disable-background-networking --disable-component-update --disable-sync --disable-dev-shm-usage \
		--user-data-dir="$prof" --screenshot="$TMP/quiet.png" --window-size=1200,2000 \
		"file://$TMP/quiet/report.html" >>chromium.log 2>&1
	expect "rendered: green and red differences in the table, none on the quiet page" $PY - shot.png quiet.png <<-'PY'
	import sys
	from PIL import Image
	def count(path, box):
	    im = Image.open(path).convert("RGB").crop(box)
	    # the page's green #0a7d28 and red #c0161b, and their anti-aliased edges
	    green = sum(1 for r, g, b in im.getdata() if g > 90 and g > r + 50 and g > b + 40)
	    red = sum(1 for r, g, b in im.getdata() if r > 150 and r > g + 90 and r > b + 80)
	    return green, red
	table = (0, 0, 1200, 900)  # the metrics table; the gallery starts far below
	g, r = count(sys.argv[1], table)
	qg, qr = count(sys.argv[2], (0, 0, 1200, 2000))
	print("run: green %d red %d; quiet page: green %d red %d" % (g, r, qg, qr), file=sys.stderr)
	assert g > 50 and r > 20, "no coloured differences in the table"
	assert qg == 0 and qr == 0, "a change inside the noise is coloured"
	PY
	cat .err | diag
else
	ok "# SKIP no /usr/bin/chromium (Debian package chromium)"
fi
# SEVA_KEEP=DIR keeps the run directory and the screenshot for a look by eye.
[ -z "${SEVA_KEEP:-}" ] || cp -r run quiet shot.png quiet.png "$SEVA_KEEP"/ 2>/dev/null || :
done_testing
