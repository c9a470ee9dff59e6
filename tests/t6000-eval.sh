#!/bin/bash
# seva-eval: metrics on answered bench samples, the official POPE files,
# --compare, exports, bad and empty input.
. "$(dirname "$0")/lib.sh"
PY=/usr/bin/python3
FIX=$TOP/tests/fixtures/pope

# Answers made here: "perfect" copies the truth, "yes" says yes to everything,
# "mixed" is perfect on two samples in three and says yes on the third.
seva-synth --split bench -n 6 -s 2 >bench.mp
cat >answer.py <<'EOF'
import sys, msgpack
mode, src, dst = sys.argv[1:4]
out = open(dst, 'wb')
for i, r in enumerate(msgpack.Unpacker(open(src, 'rb'), raw=False)):
    t = r['json']['truth']
    m = ('perfect' if i % 3 else 'yes') if mode == 'mixed' else mode
    if t['task'] == 'pope':
        a = 'Yes.' if m == 'yes' or t['label'] == 'yes' else 'No, there is not.'
    elif t['task'] == 'describe':
        a = 'There is ' + ' and '.join('a ' + o for o in t['objects']) + ('.' if m == 'perfect' else ' and a star.')
    elif t['task'] == 'color':
        a = t['answer'].capitalize() + '.' if m == 'perfect' else 'Red.'
    else:
        a = ['Zero.', 'One.', 'Two.', 'Three.', 'Four.'][int(t['answer'])] if m == 'perfect' else 'Two.'
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
$PY answer.py mixed bench.mp mixed.mp

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

# --json keeps every sample's score, so saved metrics can be paired.
nsamples=$($PY -c "import msgpack;print(sum(1 for _ in msgpack.Unpacker(open('perfect.mp','rb'))))")
expect "per_sample: one score per sample, with key, image and task" jq -e --argjson n "$nsamples" '
  (.per_sample | length) == $n and (.per_sample | map(.key) | unique | length) == $n and
  (.per_sample | all(has("key") and has("image") and has("task"))) and
  (.per_sample[0] | .image == "000000" and .task == "pope" and .label != null and .answer != null)' perfect.json

# Intervals: a paired bootstrap over images; McNemar's exact p.
expect "--compare mixed against always-yes" seva-eval --compare --json yes.json mixed.mp
cp .out mixcmp.json
expect "JSON carries intervals, significance, McNemar and how the bootstrap ran" jq -e '
  (.ci.pope.random.accuracy | length) == 2 and (.significant.pope.random.accuracy | type) == "boolean" and
  (.mcnemar.pope.random.accuracy | has("lost") and has("gained") and has("p")) and
  .bootstrap.resamples == 2000 and .bootstrap.seed == 0 and .bootstrap.unit == "image" and .images == 6' mixcmp.json
expect "each interval holds its difference" jq -e '
  [paths(type == "number") as $p | select($p[0] == "diff") | [getpath($p), getpath(["ci"] + $p[1:])]] |
  length > 10 and all(.[1][0] <= .[0] and .[0] <= .[1][1])' mixcmp.json
# McNemar from the two runs' per-sample scores, summed here in exact integers.
seva-eval --json -o mixed.json mixed.mp
cat >mcnemar.py <<'EOF'
import json, math, sys
from fractions import Fraction
b, a, c = (json.load(open(f)) for f in sys.argv[1:4])
right = lambda s: s['label'] == s['answer'] if s['task'] == 'pope' else (
    s['hallucinated'] == 0 if s['task'] == 'describe' else s['correct'])
after = {s['key']: s for s in a['per_sample']}
bad = 0
for want, sect, split in [('pope', 'pope', x) for x in ('random', 'popular', 'adversarial')] + [
        ('describe', 'chair', None), ('color', 'color', None), ('count', 'count', None)]:
    pairs = [(right(s), right(after[s['key']])) for s in b['per_sample']
             if s['task'] == want and (split is None or s['split'] == split)]
    lost = sum(x and not y for x, y in pairs); gained = sum(y and not x for x, y in pairs)
    m, k = lost + gained, min(lost, gained)
    p = float(min(1, 2 * Fraction(sum(math.comb(m, i) for i in range(k + 1)), 2 ** m))) if m else 1.0
    got = c['mcnemar'][sect]
    got = got[split] if split else got
    got = got['chair_s' if sect == 'chair' else 'accuracy']
    print(sect, split, 'lost', lost, 'gained', gained, 'p', p, file=sys.stderr)
    if (got['lost'], got['gained']) != (lost, gained) or abs(got['p'] - p) > 1e-9 * p:
        print(sect, split, 'want', lost, gained, p, 'got', got); bad += 1
sys.exit(bad)
EOF
expect "McNemar's counts and p are the exact binomial of the per-sample scores" $PY mcnemar.py yes.json mixed.json mixcmp.json
check "... and some of them changed" "$(grep -c 'gained [1-9]' .err)" -gt 0
expect "a run against itself" seva-eval --compare --json mixed.json mixed.mp
expect "... every interval is [0, 0] and nothing is significant" jq -e '
  ([.ci | .. | arrays] | length > 10 and all(. == [0, 0])) and ([.significant | .. | booleans] | all(. == false))' .out
expect "the same seed gives the same intervals" seva-eval --compare --json -s 5 --boot 300 yes.json mixed.json
cp .out s5.json
expect "... again" seva-eval --compare --json -s 5 --boot 300 yes.json mixed.json
same "... byte for byte" .out s5.json
expect "another seed" seva-eval --compare --json -s 6 --boot 300 yes.json mixed.json
check "... other intervals" "$(jq -c .ci .out)" != "$(jq -c .ci s5.json)"
check "... the same differences" "$(jq -c .diff .out)" = "$(jq -c .diff s5.json)"
expect "the table: interval, McNemar p, verdict" seva-eval --compare yes.json perfect.json
cp .out cmpv.txt
check "POPE-random accuracy 0.5 → 1: better, with its interval" \
  "$(awk '$1 == "pope.random.accuracy" {print $2, $3, $4, $NF}' cmpv.txt)" = "0.5000 1.0000 +0.5000 better"
check "the table says how the intervals were made" "$(grep -c 'of 6 images paired by key; 95 % intervals: bootstrap over images, 2000 resamples, seed 0' cmpv.txt)" = 1
check "yes ratio: no better or worse, only differs" "$(awk '$1 == "pope.random.yes_ratio" {print $NF}' cmpv.txt)" = differs
# Several runs after (training seeds): their mean, pooled.
expect "--compare BEFORE AFTER AFTER AFTER" seva-eval --compare --json yes.json perfect.json mixed.json perfect.mp
expect "... after is the runs' mean, no McNemar" jq -e --slurpfile p perfect.json --slurpfile m mixed.json '
  .runs == 3 and (has("mcnemar") | not) and
  ((.after.pope.random.accuracy - (2 * $p[0].pope.random.accuracy + $m[0].pope.random.accuracy) / 3) | fabs) < 2e-6' .out

# Runs that do not pair, and malformed metrics files, are refused with a place.
seva-synth --split bench -n 6 -s 3 >other.mp
$PY answer.py perfect other.mp other-perfect.mp
expect_fail "samples of another bench" 1 seva-eval --compare perfect.json other-perfect.mp
stderr_has "names the run and the first key that differs" "^seva-eval: other-perfect.mp: key 000000-"
jq 'del(.per_sample[3])' perfect.json >short.json
expect_fail "a sample missing" 1 seva-eval --compare perfect.json short.json
stderr_has "... the metrics no longer agree" 'short.json: "samples" is not what its per_sample scores give'
$PY -c "
import msgpack
rs = list(msgpack.Unpacker(open('perfect.mp', 'rb'), raw=False))
open('perfect-short.mp', 'wb').write(b''.join(msgpack.packb(r) for i, r in enumerate(rs) if i != 3))"
expect_fail "samples scored now, one missing" 1 seva-eval --compare perfect.json perfect-short.mp
stderr_has "... names the run and the key" "perfect-short.mp: key 000000-pope-rnd-3: not scored \(perfect.json has it\)"
echo '{"samples":"x","pope":5}' >l11.json
expect_fail "metrics without per-sample scores" 1 seva-eval --compare l11.json l11.json
stderr_has "... says so" 'l11.json: no "per_sample" array'
jq '.per_sample[2].label = "maybe"' perfect.json >badlabel.json
expect_fail "a malformed score" 1 seva-eval --compare perfect.json badlabel.json
stderr_has "... named by index and key" 'badlabel.json: per_sample\[2\] \(key 000000-pope-rnd-2\): "label" is not "yes" or "no"'
jq '.count.accuracy = 0.5' perfect.json >edited.json
expect_fail "metrics that disagree with their scores" 1 seva-eval --compare perfect.json edited.json
stderr_has "... names the section" 'edited.json: "count" is not what its per_sample scores give'
expect_fail "--boot 0" 2 seva-eval --compare --boot 0 perfect.json perfect.json
stderr_has "--boot names its range" "--boot"
expect_fail "-s not a number" 2 seva-eval --compare -s x perfect.json perfect.json

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
expect_fail "-k skips, counts, exits 3" 3 seva-eval -k --json noresp.mp
stderr_has "-k reports the count" "^seva-eval: 1 of [0-9]+ samples skipped"
check "-k still writes metrics" "$(jq .skipped .out)" = 1
expect_fail "-k: a missing file is passed over, counted, exit 3" 3 seva-eval -k --json nonexistent.mp perfect.mp
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
