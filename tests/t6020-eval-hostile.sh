#!/bin/bash
# seva-eval on malformed input: a vocabulary line without a name, metrics
# files that are not metrics, repeated ids in the MM-Vet export (the last
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
bad() { echo "$2" >"$1.json"; expect_fail "--compare: $3: exit 1" 1 seva-eval --compare "$1.json" m.json
	stderr_has "... named" "$1\.json: not metrics as seva-eval --json writes them: $4"; }
bad s '{"samples":"x","pope":5}' "samples a string" "samples: not a count"
bad p '{"samples":3,"pope":5}' "pope a number" "pope: not an object"
bad q '{"samples":3,"pope":{"random":{"n":3,"f1":"high"}}}' "a column a string" \
	"pope\.random\.f1: not a number in \[0, 1\]"
bad n '{"samples":3,"chair":{"n":-1}}' "a negative n" "chair\.n: not a count"
bad r '{"samples":3,"color":{"n":2,"accuracy":7}}' "a ratio over 1" "color\.accuracy: not a number in \[0, 1\]"
$PY -c '
import json
m = json.load(open("m.json")); m["note"] = "written by hand"
json.dump(m, open("extra.json", "w"))
'
expect "--compare: fields it does not know are left alone" seva-eval --compare extra.json m.json

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
