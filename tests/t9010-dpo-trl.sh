#!/bin/bash
# seva-dpo's losses against TRL's own code: tests/unit/dpo_trl_ref.py runs
# TRL 1.16's DPOTrainer._compute_loss (tests/vendor/venv) on given
# log-probs; test_train checks dpo_batch_loss against the header it made.
# Here the header is made again and must be what test_train was built with,
# so a TRL whose formulas moved, or a header edited by hand, fails.
. "$(dirname "$0")/lib.sh"
VPY=$TOP/tests/vendor/venv/bin/python

if [ ! -x "$VPY" ]; then
	not_ok "$VPY is missing: run tests/deps.sh"
	done_testing
	exit
fi
expect "TRL's DPOTrainer._compute_loss runs on given log-probs" \
	sh -c "'$VPY' '$TOP/tests/unit/dpo_trl_ref.py' >trl.h"
same "... and gives the values test_train checks seva against" "$TOP/tests/unit/dpo_trl_ref.h" trl.h
expect "test_train passes against them" "$TOP/tests/bin/test_train"
check "... including the TRL comparison" "$(grep -c "^ok .*equal TRL 1.16.s DPOTrainer" "$TMP/.out")" = 1
done_testing
