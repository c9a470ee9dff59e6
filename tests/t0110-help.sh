#!/bin/bash
# --help on every tool: the synopsis and every option with its default, as
# HfArgumentParser and llama.cpp list them. The text is the man page's
# OPTIONS section (one place for each option), so this checks both: every
# long option a tool's getopt table takes is in its --help, and each that
# takes a value says its default (or that it is required). A usage error
# still prints the synopsis alone.
. "$(dirname "$0")/lib.sh"
PY=/usr/bin/python3

for t in cat synth augment generate pair sft dpo eval tok; do
	expect "seva-$t --help: exit 0" seva-$t --help
	cp "$TMP/.out" help-$t.txt
	check "seva-$t --help: the synopsis first" "$(head -1 help-$t.txt | cut -d' ' -f1-2)" = "usage: seva-$t"
	check "seva-$t --help: then the options" "$(grep -c '^Options (man seva-'$t' for the whole page):$' help-$t.txt)" = 1
	check "seva-$t --help: nothing on standard error" ! -s "$TMP/.err"
	# the long options of the tool's table (and the training tools' shared one)
	src="$TOP/cmd/seva-$t.c"
	grep -q TRAIN_LONGOPTS "$src" && src="$src $TOP/common/train.h"
	$PY - help-$t.txt $src >missing-$t.txt <<'PY'
import re, sys
text = open(sys.argv[1]).read()
src = "".join(open(p).read() for p in sys.argv[2:])
opts = sorted(set(re.findall(r'\{\s*"([a-z0-9-]+)",\s*(required|no|optional)_argument', src)))
# an option's paragraph: from a line starting with "-" (indented) to the next
blocks, cur = [], None
for line in text.split("\n"):
    if re.match(r"^ {5}-", line):
        cur = [line]
        blocks.append(cur)
    elif cur is not None and line.strip():
        cur.append(line)
if len(opts) < 5:
    print("only %d long options found in the sources" % len(opts))
for name, kind in opts:
    pat = re.compile(r"--" + re.escape(name) + r"(?![a-z0-9-])")
    own = [b for b in blocks if pat.search(b[0])] or [b for b in blocks if pat.search(" ".join(b))]
    if not own:
        print("--%s: not in --help" % name)
    elif kind != "no" and not any(re.search(r"default|required", " ".join(b), re.I) for b in own):
        print("--%s: takes a value, and its paragraph gives no default" % name)
PY
	if [ ! -s missing-$t.txt ]; then ok "seva-$t --help: every long option, each value's default"
	else not_ok "seva-$t --help: every long option, each value's default"; diag <missing-$t.txt; fi
	expect_fail "seva-$t --no-such-option: exit 2" 2 seva-$t --no-such-option
	check "... the synopsis alone, on standard error" \
		"$(grep -c '^Options' "$TMP/.err")" = 0 -a "$(grep -c '^usage: seva-' "$TMP/.err")" = 1
done
check "seva-dpo --help: --lora-dropout with its default" \
	"$(grep -A1 -- '--lora-dropout p$' help-dpo.txt | grep -c 'default 0')" = 1
check "seva-sft --help: --lr with its default" "$(grep -A1 -- '--lr lr$' help-sft.txt | grep -c 'default 1e-3')" = 1
done_testing
