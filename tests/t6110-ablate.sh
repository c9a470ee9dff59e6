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

A="$P/ablate.sh -q -m model -o abl -n 4 -b 1 --dpo --max-steps=2"
expect "a tiny ablation: none, t800, random-negative" $A --variants none,t800,random-negative
cp .out table.txt
check "table: header, base and three variants" "$(wc -l <table.txt)" = 5
check "same table in ablation.txt" "$(cmp -s table.txt abl/ablation.txt && echo same)" = same
check "markdown table" "$(grep -c '^| ' abl/ablation.md)" = 6
expect "ablation.json: none made no pairs and trained nothing" \
	jq -e '.variants[1] | .variant == "none" and .pairs == 0 and .status == "no pairs" and .metrics == null' abl/ablation.json
check "none's row says so" "$(grep -c '^none .* 0 .*no pairs: nothing to train' table.txt)" = 1
for v in t800 random-negative; do
	seva-cat -j -f pair.json abl/$v/pairs.msgpack >$v.pairs
	expect "$v: pairs counted, metrics are its eval.aligned.json" jq -e --slurpfile m abl/$v/eval.aligned.json \
		--argjson n "$(wc -l <$v.pairs)" '.variants[] | select(.variant == "'$v'") | .pairs == $n and $n > 0 and .metrics == $m[0]' abl/ablation.json
	same "$v: the base model's bench answers are the shared ones" abl/bench.base.msgpack abl/$v/bench.base.msgpack
	check "$v: a report beside the run" -s abl/$v/report.html
done
check "t800: the recipe reached seva-augment" "$(jq -r '.["pair.json"].recipe.recipe' t800.pairs | sort -u)" = diffusion:t=800
check "random-negative: the pairing option reached seva-pair" "$(jq -r '.["pair.json"].mode' random-negative.pairs | sort -u)" = random-negative
expect "again: the base model's bench answers are reused" "$P/ablate.sh" -m model -o abl -n 4 -b 1 --variants none
stderr_has "says so" "reusing the base model's bench answers"
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
