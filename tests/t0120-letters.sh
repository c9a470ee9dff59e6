#!/bin/bash
# One meaning per option letter across the tools (seva(7), Conventions):
# each short letter in any tool's --help stands for the same long option in
# every tool that has it; the old short forms that meant something else
# (seva-cat's -j, seva-synth's -f) are usage errors naming the new option;
# and llama.cpp's "-t N" (threads there, tar here) is a usage error naming
# -j rather than an input '8' that cannot be opened.
. "$(dirname "$0")/lib.sh"
PY=/usr/bin/python3

for t in "$TOP"/bin/seva-*; do
	"$t" --help >"help.$(basename "$t")" 2>&1 || echo "$(basename "$t") --help failed" >>help.err
done
check "every tool prints --help" ! -s help.err
# "-j, --threads n" pairs wherever an option line lists them
"$PY" - help.seva-* >letters.txt <<'EOF'
import re, sys
seen = {}
for f in sys.argv[1:]:
    for line in open(f):
        for m in re.finditer(r"(?:^\s+|, )-([A-Za-z0-9])(?: [a-z]+)?, --([a-z0-9-]+)", line):
            seen.setdefault(m.group(1), {}).setdefault(m.group(2), []).append(f[5:])
for k in sorted(seen):
    print(k, " ".join("--%s(%s)" % (l, ",".join(t)) for l, t in sorted(seen[k].items())))
EOF
check "the help lists the shared letters (-o, -t, -j, -k, -q at least)" \
	"$(grep -c '^[otjkq] ' letters.txt)" = 5
clash=$(awk 'NF > 2' letters.txt)
if [ -z "$clash" ]; then ok "each letter is one long option in every tool ($(wc -l <letters.txt) letters)"
else not_ok "each letter is one long option in every tool"; echo "$clash" | diag; fi
check "-j is --threads" "$(awk '$1 == "j" {print substr($2, 1, 10)}' letters.txt)" = "--threads("
check "-t is --tar" "$(awk '$1 == "t" {print substr($2, 1, 6)}' letters.txt)" = "--tar("

seva-synth --split sft -n 2 -s 1 >two.mp
expect_fail "seva-cat -j: usage error" 2 seva-cat -j two.mp
stderr_has "... naming --jsonl and why" "^seva-cat: -j: JSON lines are --jsonl .*thread count"
expect "seva-cat --jsonl" seva-cat --jsonl two.mp
check "... writes JSON lines" "$(jq -s length "$TMP/.out")" = 2
expect_fail "seva-synth -f jsonl: usage error" 2 seva-synth --split sft -n 2 -f jsonl
stderr_has "... naming --format" "^seva-synth: -f: the output format is --format"
expect "seva-synth --format jsonl" seva-synth --split sft -n 2 -s 1 --format jsonl
check "... writes JSON lines" "$(jq -s length "$TMP/.out")" = 2

# -t followed by a number that names no file
expect_fail "seva-generate -m base -t 8: usage error" 2 seva-generate -m base -t 8 </dev/null
stderr_has "... saying -t writes tar and the thread count is -j" \
	"^seva-generate: -t takes no value: it writes a tar shard \('8' is no file; the thread count is -j 8\)"
expect_fail "seva-pair -t 8 (no threads there)" 2 seva-pair -t 8 </dev/null
stderr_has "... says -t writes tar" "^seva-pair: -t takes no value: it writes a tar shard \('8' is no file\)$"
for t in seva-augment seva-cat seva-dpo seva-synth; do
	expect_fail "$t -t 8: usage error" 2 $t -t 8 </dev/null
done
cp two.mp 8
expect "... but a file named 8 is an input" seva-cat -t -o out.tar 8
check "... converted" "$(tar -tf out.tar | wc -l)" -gt 2
done_testing
