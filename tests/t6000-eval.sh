#!/bin/bash
# seva-eval: metrics on answered bench samples, the official POPE files,
# --compare, exports, bad and empty input.
. "$(dirname "$0")/lib.sh"
PY=/usr/bin/python3
FIX=$TOP/tests/fixtures/pope

# Answers made here: "perfect" copies the truth, "yes" says yes to everything.
seva-synth --split bench -n 6 -s 2 >bench.mp
cat >answer.py <<'EOF'
import sys, msgpack
mode, src, dst = sys.argv[1:4]
out = open(dst, 'wb')
for i, r in enumerate(msgpack.Unpacker(open(src, 'rb'), raw=False)):
    t = r['json']['truth']
    if t['task'] == 'pope':
        a = 'Yes.' if mode == 'yes' or t['label'] == 'yes' else 'No, there is not.'
    elif t['task'] == 'describe':
        a = 'There is ' + ' and '.join('a ' + o for o in t['objects']) + ('.' if mode == 'perfect' else ' and a star.')
    elif t['task'] == 'color':
        a = t['answer'].capitalize() + '.' if mode == 'perfect' else 'Red.'
    else:
        a = ['Zero.', 'One.', 'Two.', 'Three.', 'Four.'][int(t['answer'])] if mode == 'perfect' else 'Two.'
    if mode == 'noresp' and i == 3:
        pass
    elif mode == 'notruth' and i == 2:
        del r['json']['truth']
        r['response.txt'] = a
    else:
        r['response.txt'] = a
    out.write(msgpack.packb(r, use_bin_type=True))
EOF
$PY answer.py perfect bench.mp perfect.mp
$PY answer.py yes bench.mp yes.mp

expect "perfect answers" seva-eval --json perfect.mp
cp .out perfect.json
expect "perfect: every metric is 1, CHAIR 0" jq -e '
  ([.pope[] | .accuracy, .f1] | all(. == 1)) and ([.pope[] | .yes_ratio] | all(. == 0.5)) and
  .chair.chair_s == 0 and .chair.chair_i == 0 and .chair.recall == 1 and
  .color.accuracy == 1 and .count.accuracy == 1 and (.pope | keys == ["adversarial","popular","random"])' perfect.json
expect "always-yes answers" seva-eval --json yes.mp
cp .out yes.json
expect "always yes: accuracy 0.5, recall 1, yes ratio 1; every description hallucinates a star or nothing" \
  jq -e '([.pope[] | .accuracy] | all(. == 0.5)) and ([.pope[] | .recall, .yes_ratio] | all(. == 1)) and .chair.chair_i > 0' yes.json

expect "table on stdout" seva-eval perfect.mp
cp .out table.txt
check "table names the splits" "$(grep -c -E '^(random|popular|adversarial) ' table.txt)" = 3
check "table has CHAIR and exact match rows" "$(grep -c -E '^(describe|color|count) ' table.txt)" = 3

# --compare: samples against saved metrics, and as JSON.
expect "--compare metrics and samples" seva-eval --compare yes.json perfect.mp
cp .out cmp.txt
check "compare prints the adversarial F1 row with a difference" \
  "$(awk '$1 == "pope.adversarial.accuracy" {print $2, $3, $4}' cmp.txt)" = "0.5000 1.0000 +0.5000"
expect "--compare --json" seva-eval --compare --json yes.json perfect.json
cp .out cmp.json
expect "compare JSON has before, after and diff" jq -e '.diff.pope.random.accuracy == 0.5 and .before.pope.random.accuracy == 0.5' cmp.json
expect "-o writes the metrics" seva-eval --json -o saved.json perfect.mp
same "-o FILE holds what stdout would" saved.json perfect.json

# The official POPE files; their metrics are worked out by hand in test_eval.c.
expect "--pope-questions/--pope-answers" seva-eval --json --pope-questions $FIX/coco_pope_adversarial.jsonl --pope-answers $FIX/answers.jsonl
cp .out pope.json
expect "hand-computed POPE metrics" jq -e '.pope.adversarial | .tp == 4 and .fp == 3 and .tn == 3 and .fn == 2 and
  .accuracy == 0.583333 and .precision == 0.571429 and .recall == 0.666667 and .f1 == 0.615385' pope.json
jq -c '{answer: .text}' $FIX/answers.jsonl >answers-key.jsonl
expect "answers with an \"answer\" key (POPE's own script)" seva-eval --json --pope-questions $FIX/coco_pope_adversarial.jsonl --pope-answers answers-key.jsonl
same "same metrics either way" .out pope.json
head -5 $FIX/answers.jsonl >short.jsonl
expect_fail "answer file too short" 1 seva-eval --pope-questions $FIX/coco_pope_adversarial.jsonl --pope-answers short.jsonl
stderr_has "names the file" "short.jsonl: ends after 5 questions"

# Exports.
expect "--mmvet and --llava-bench" seva-eval --mmvet mmvet.json --llava-bench llava.jsonl --model-id base perfect.mp
expect "MM-Vet: one answer per key" jq -e '(keys | length) == '"$($PY -c "import msgpack;print(sum(1 for _ in msgpack.Unpacker(open('perfect.mp','rb'))))")"' and .["000000-count"] != null' mmvet.json
expect "LLaVA-Bench lines carry the fields" jq -se 'all(has("question_id") and has("prompt") and has("text") and has("answer_id") and .model_id == "base")' llava.jsonl
printf '%s\n' '{"__key__":"q2","json":{"question_id":2,"prompt":"b"},"response.txt":"B"}' \
  '{"__key__":"q0","json":{"question_id":0,"prompt":"a"},"response.txt":"A"}' >q.jsonl
$PY -c "
import json, msgpack, sys
with open('q.mp', 'wb') as f:
    for l in open('q.jsonl'): f.write(msgpack.packb(json.loads(l)))"
expect "exports without truth" seva-eval --llava-bench q.out.jsonl --mmvet q.mmvet.json q.mp
check "LLaVA-Bench answers in question order" "$(jq -r .text q.out.jsonl | tr -d '\n')" = AB
check "MM-Vet keyed by key when no json.id" "$(jq -r '.q2' q.mmvet.json)" = B

# COCO-style vocabulary file.
printf '%s\n' '{"__key__":"c","json":{"prompt":"Describe.","truth":{"task":"describe","objects":["person"]}},"response.txt":"Two men and a puppy."}' >c.jsonl
$PY -c "
import json, msgpack
with open('c.mp', 'wb') as f:
    for l in open('c.jsonl'): f.write(msgpack.packb(json.loads(l)))"
expect "--vocab COCO synonyms" seva-eval --json --vocab $FIX/synonyms.txt c.mp
expect "men → person, puppy → dog (hallucinated)" jq -e '.chair.mentions == 2 and .chair.hallucinated == 1' .out

# Bad input: missing response, missing truth, garbage; -k skips and counts.
$PY answer.py noresp bench.mp noresp.mp
expect_fail "sample without response.txt" 1 seva-eval noresp.mp
stderr_has "names the record and key" "noresp.mp: record 4 \(key 000000-pope-rnd-3\): no response.txt"
$PY answer.py notruth bench.mp notruth.mp
expect_fail "sample without truth" 1 seva-eval notruth.mp
stderr_has "names the key" "key 000000-pope-rnd-2.*no json.truth"
expect_fail "-k skips, counts, exits 1" 1 seva-eval -k --json noresp.mp
stderr_has "-k reports the count" "^seva-eval: 1 of [0-9]+ samples skipped"
check "-k still writes metrics" "$(jq .skipped .out)" = 1
expect_fail "-k: a missing file is passed over, counted, exit 1" 1 seva-eval -k --json nonexistent.mp perfect.mp
stderr_has "... named" "^seva-eval: open 'nonexistent.mp'"
stderr_has "... counted" "^seva-eval: 1 input could not be read"
check "... and the other file still scored" "$(jq -r '.pope | type' .out)" = object
head -c 3000 perfect.mp >trunc.mp
expect_fail "truncated stream" 1 seva-eval trunc.mp
expect_fail "missing file" 1 seva-eval nonexistent.mp
expect_fail "--compare needs two runs" 2 seva-eval --compare yes.json
expect_fail "--pope-questions without answers" 2 seva-eval --pope-questions $FIX/coco_pope_adversarial.jsonl
printf 'not json {' >bad.json
expect_fail "a broken metrics file" 1 seva-eval --compare yes.json bad.json

# Empty input, full disk, closed pipe.
: >empty.mp
expect "empty input" seva-eval empty.mp
check "empty input: no rows" "$(wc -c <.out)" = 0
expect "empty stdin" sh -c 'seva-eval </dev/null'
expect_fail "/dev/full" 1 sh -c 'seva-eval perfect.mp >/dev/full'
stderr_has "/dev/full says write error" "write error"
(seva-eval --compare yes.json perfect.json 2>head.err | head -1 >/dev/null)
check "| head -1 ends quietly" "$(cat head.err)" = ""

done_testing
