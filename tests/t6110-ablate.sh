#!/bin/bash
# pipelines/ablate.sh and report.sh: syntax (bash -n), the command line, and —
# once pipelines/seva.sh takes --pair and --bench-base — a tiny ablation on a
# randomly initialised model (answers are garbage; the plumbing is what counts).
. "$(dirname "$0")/lib.sh"
P=$TOP/pipelines
FIX=$TOP/tests/fixtures/train

expect "bash -n report.sh" bash -n "$P/report.sh"
expect "bash -n ablate.sh" bash -n "$P/ablate.sh"

expect_fail "unknown variant" 2 "$P/ablate.sh" --variants none,sideways
stderr_has "names it and the choices" "unknown variant 'sideways' \(one of: none hflip"
expect_fail "-n wants a number" 2 "$P/ablate.sh" -n many
expect_fail "unknown option" 2 "$P/ablate.sh" --frobnicate
expect_fail "option without its value" 2 "$P/ablate.sh" -o
expect_fail "no model" 1 "$P/ablate.sh" -m nowhere -o out
stderr_has "says where it looked" "no model at 'nowhere'"

seva-synth --tokenizer >tok.json
seva-sft --config "$FIX/tiny-config.json" --tokenizer tok.json --preprocessor "$FIX/tiny-preprocessor.json" \
	-s 1 --init-only -o model 2>init.err || { cat init.err; exit 1; }

if ! grep -q '^[[:space:]]*--pair)' "$P/seva.sh" || ! grep -q '^[[:space:]]*--bench-base)' "$P/seva.sh"; then
	expect_fail "seva.sh without --pair/--bench-base: a clear refusal" 1 "$P/ablate.sh" -m model -o out
	stderr_has "names the missing flag" "seva.sh does not take --pair"
	ok "# SKIP the tiny ablation needs seva.sh --pair and --bench-base"
	done_testing
	exit
fi

A="$P/ablate.sh -q -m model -o abl -n 4 -b 2 --dpo --max-steps=2"
expect_fail "--seeds 0" 2 $A --seeds 0
expect "a tiny ablation over 3 seeds: none, t800, random-negative" $A --variants none,t800,random-negative
cp .out table.txt
check "table: header, base, three variants and the note" "$(wc -l <table.txt)" = 6
check "same table in ablation.txt" "$(cmp -s table.txt abl/ablation.txt && echo same)" = same
check "markdown table" "$(grep -c '^| ' abl/ablation.md)" = 6
check "the note says how rows are pooled" "$(grep -c '^mean over 3 seed(s) ± half the 95 % interval (bootstrap over 2 bench images, seeds drawn too)' table.txt)" = 1
expect "ablation.json: none made no pairs and trained nothing" \
	jq -e '.variants[1] | .variant == "none" and .pairs == 0 and .status == "no pairs" and .metrics == null and .pairs_per_seed == [0, 0, 0]' abl/ablation.json
check "none's row says so" "$(grep -c '^none .* 0 .*no pairs: nothing to train' table.txt)" = 1
for v in t800 random-negative; do
	for k in 0 1 2; do
		same "$v seed $k: the base model's bench answers are the shared ones" abl/bench.base.msgpack abl/$v/s$k/bench.base.msgpack
		check "$v seed $k: a report beside the run" -s abl/$v/s$k/report.html
	done
	n0=$(seva-cat --jsonl -f pair.json abl/$v/s0/pairs.msgpack | wc -l) n1=$(seva-cat --jsonl -f pair.json abl/$v/s1/pairs.msgpack | wc -l)
	n2=$(seva-cat --jsonl -f pair.json abl/$v/s2/pairs.msgpack | wc -l)
	expect "$v: pairs per seed counted, and their mean" jq -e --argjson a "[$n0, $n1, $n2]" \
		'.variants[] | select(.variant == "'$v'") | .pairs_per_seed == $a and .pairs == ($a | add / 3) and .pairs > 0' abl/ablation.json
	# The row is the seeds' mean; its interval the pooled one of seva-eval --compare.
	expect "$v: each cell is the mean of the 3 seeds' metrics" jq -e --slurpfile a abl/$v/s0/eval.aligned.json \
		--slurpfile b abl/$v/s1/eval.aligned.json --slurpfile c abl/$v/s2/eval.aligned.json '
		.variants[] | select(.variant == "'$v'") | [.cells[0].mean, .cells[2].mean, .cells[5].mean] as $got |
		[["pope","adversarial","f1"], ["chair","chair_s"], ["count","accuracy"]] | map(. as $p |
		  ([$a[0], $b[0], $c[0]] | map(getpath($p)) | add / 3)) as $want |
		[range(3) | ($got[.] - $want[.]) | fabs < 2e-6] | all' abl/ablation.json
	seva-eval --compare --json abl/eval.base.json abl/$v/s*/eval.aligned.json >pooled.json
	expect "$v: intervals and significance are the pooled comparison's" jq -e --slurpfile p pooled.json '
		.variants[] | select(.variant == "'$v'") | .cells[1].ci == $p[0].after_ci.pope.adversarial.accuracy and
		.cells[1].diff_ci == $p[0].ci.pope.adversarial.accuracy and .cells[1].significant == $p[0].significant.pope.adversarial.accuracy and
		$p[0].runs == 3' abl/ablation.json
done
check "t800: the recipe reached seva-augment" "$(seva-cat --jsonl -f pair.json abl/t800/s1/pairs.msgpack | jq -r '.["pair.json"].recipe.recipe' | sort -u)" = diffusion:t=800
check "random-negative: the pairing option reached seva-pair" "$(seva-cat --jsonl -f pair.json abl/random-negative/s2/pairs.msgpack | jq -r '.["pair.json"].mode' | sort -u)" = random-negative
check "seeds differ: seed 0 and 1 drew other unlabeled images" "$(cmp -s abl/t800/s0/unlabeled.msgpack abl/t800/s1/unlabeled.msgpack && echo same)" = ""
expect "again, one seed: the base model's bench answers are reused" "$P/ablate.sh" -m model -o abl -n 4 -b 2 --seeds 1 --variants none
stderr_has "says so" "reusing the base model's bench answers"
expect "seva-mix: one seed" "$P/ablate.sh" -q -m model -o abl -n 4 -b 2 --seeds 1 --variants seva-mix --dpo --max-steps=2
check "seva-mix: SeVa's question mix reached seva-synth (two questions per image)" \
	"$(seva-cat --jsonl abl/seva-mix/s0/unlabeled.msgpack | wc -l)" = 8
check "seva-mix: short answers only, no descriptions" \
	"$(seva-cat --jsonl abl/seva-mix/s0/unlabeled.msgpack | jq -r .json.task | grep -c describe)" = 0
# -- seva.sh's own options -------------------------------------------------------------
S=$P/seva.sh
expect "seva.sh --help: the usage on stdout, exit 0" "$S" --help
check "the usage names its options" "$(grep -c -- '--bench-input' .out)" -ge 1
check "and no code" "$(grep -c 'set -euo\|here=' .out)" = 0
expect_fail "seva.sh -o without its value: usage error" 2 "$S" -o
stderr_has "names the option" "option '-o' needs a value"
expect_fail "an unknown option: usage error" 2 "$S" --frobnicate
stderr_has "names it" "unknown option '--frobnicate'"
expect_fail "a model outside pipelines/ without --bench-input: a note (then no pairs: exit 1)" 1 \
	"$S" -m model -o run-real -n 2 -b 1 -r none -q
stderr_has "the note says the bench is synthetic" "scored on the synthetic bench"
done_testing
