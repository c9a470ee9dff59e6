#!/bin/bash
# seva-eval on malformed input: a vocabulary line without a name, a
# metrics file that is not metrics, repeated ids in the MM-Vet export (the last
# answer wins, in O(n log n)); LLaVA-Bench order kept for equal ids.
. "$(dirname "$0")/lib.sh"
PY=/usr/bin/python3

printf ',\n' >commas.txt
expect_fail "--vocab: a line of commas: exit 1, no signal" 1 seva-eval --vocab commas.txt /dev/null
stderr_has "... named" "commas\.txt: line 1: no object name before ','"
printf 'dog, puppy\n , cat\n' >lead.txt
expect_fail "--vocab: a line starting with a comma: exit 1" 1 seva-eval --vocab lead.txt /dev/null
stderr_has "... named" "lead\.txt: line 2: no object name before ','"
printf 'dog, puppy,, pup\n' >ok.txt
expect "--vocab: an empty synonym between commas is passed over" seva-eval --vocab ok.txt /dev/null

# --compare reads metrics files as --json writes them, and nothing else.
expect "samples" seva-synth --split bench -n 24 -q -o b.mp
$PY -c '
import msgpack
w = open("r.mp", "wb")
for r in msgpack.Unpacker(open("b.mp", "rb"), raw=False):
    r["response.txt"] = "Yes."
    w.write(msgpack.packb(r, use_bin_type=True))
'
expect "metrics" seva-eval --json -o m.json r.mp
expect "--compare on two metrics files" seva-eval --compare m.json m.json
# The review's malformed metrics file (--compare's reader owns the rules).
echo '{"samples":"x","pope":5}' >g.json
expect_fail "--compare: a malformed metrics file: exit 1" 1 seva-eval --compare g.json m.json
stderr_has "... naming the file" "^seva-eval: g\.json: "

# MM-Vet: an id answered twice keeps the later answer, where deleting and
# re-adding it would have put it; LLaVA-Bench: numeric ids in order, equal
# ids in input order.
$PY -c '
import msgpack
w = open("dup.mp", "wb")
for k, (i, a) in enumerate([(3, "A"), (1, "B"), (3, "C"), (2, "D"), (1, "E"), (3, "F")]):
    w.write(msgpack.packb({"__key__": "k%d" % k, "json": {"id": i, "prompt": "q"}, "response.txt": a},
                          use_bin_type=True))
'
expect "exports of repeated ids" seva-eval -q --mmvet mm.json --llava-bench lb.jsonl dup.mp
check "MM-Vet: the last answer of each id, in the order of those answers" \
	"$(jq -c . mm.json)" = '{"2":"D","1":"E","3":"F"}'
check "LLaVA-Bench: by question_id, equal ids as read" \
	"$(jq -r .text lb.jsonl | tr -d '\n')" = "BEDACF"
done_testing
