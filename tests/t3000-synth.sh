#!/bin/bash
# seva-synth: splits, determinism, sharding, formats, the tokenizer, bad usage.
. "$(dirname "$0")/lib.sh"
PY=/usr/bin/python3

expect "sft -n 20" seva-synth --split sft -n 20 -s 3
cp .out sft.mp
cat >check.py <<'EOF'
import io, json, re, sys
import msgpack
from PIL import Image
split, path, size = sys.argv[1], sys.argv[2], int(sys.argv[3])
recs = list(msgpack.Unpacker(open(path, 'rb'), raw=False))
bad = []
for r in recs:
    j = r['json']
    im = Image.open(io.BytesIO(r['png']))
    if im.size != (size, size): bad.append('%s: size %s' % (r['__key__'], im.size))
    if not j.get('prompt') or j.get('task') not in ('describe', 'exist', 'color', 'count'):
        bad.append('%s: prompt/task' % r['__key__'])
    if split == 'sft' and ('answer' not in j or 'objects' not in j): bad.append('%s: sft fields' % r['__key__'])
    if split == 'unlabeled' and set(j) != {'prompt', 'task', 'image_id'}: bad.append('%s: unlabeled fields %s' % (r['__key__'], sorted(j)))
    if split == 'bench' and 'truth' not in j: bad.append('%s: no truth' % r['__key__'])
    for o in j.get('objects', []):
        if set(o) != {'shape', 'color', 'size', 'position', 'x', 'y'}: bad.append('%s: object %s' % (r['__key__'], o))
if split == 'bench':
    # POPE balance per image and split
    from collections import Counter
    c = Counter((r['json']['image_id'], r['json']['truth']['split'], r['json']['truth']['label'])
                for r in recs if r['json']['truth']['task'] == 'pope')
    for (img, sp, lab), k in c.items():
        if c[(img, sp, 'yes')] != c[(img, sp, 'no')]: bad.append('%s %s unbalanced' % (img, sp))
    tasks = Counter(r['json']['truth']['task'] for r in recs)
    if set(tasks) != {'pope', 'describe', 'color', 'count'}: bad.append('tasks %s' % tasks)
print(len(recs))
for b in bad[:5]: print(b, file=sys.stderr)
sys.exit(1 if bad else 0)
EOF
expect "python msgpack reads sft; fields and 64x64 PNGs" $PY check.py sft sft.mp 64
check "20 sft records" "$(cat .out)" = 20

expect "unlabeled -n 30" seva-synth --split unlabeled -n 30
cp .out unl.mp
expect "unlabeled carries only prompt, task, image_id" $PY check.py unlabeled unl.mp 64

expect "bench -n 5 --size 96" seva-synth --split bench -n 5 --size 96
cp .out bench.mp
expect "bench: truth, all tasks, POPE balanced per image and split" $PY check.py bench bench.mp 96

# Same seed, same bytes; shards concatenate to the whole.
seva-synth --split sft -n 20 -s 3 >again.mp
same "same seed gives identical bytes" sft.mp again.mp
seva-synth --split sft -n 20 -s 4 >other.mp
check "another seed differs" "$(cmp -s sft.mp other.mp && echo same)" = ""
seva-synth --split sft -n 10 -s 3 >a.mp
seva-synth --split sft -n 10 --start 10 -s 3 >b.mp
cat a.mp b.mp >ab.mp
same "--start shards concatenate to the whole stream" sft.mp ab.mp

expect "tar output" seva-synth --split sft -n 2 -t
cp .out s.tar
tar -tf s.tar >members 2>&1
printf '000000.png\n000000.json\n000001.png\n000001.json\n' >want
same "tar members KEY.png, KEY.json, adjacent" members want

# The tokenizer covers every word the world says.
expect "--tokenizer" seva-synth --tokenizer
cp .out tokenizer.json
expect "tokenizer.json is JSON" jq -e '.model.type == "WordLevel" and .model.vocab["<image>"] == 4 and .pre_tokenizer.type == "Whitespace"' tokenizer.json
seva-synth --split sft -n 300 -s 9 >big.mp
cat >vocab.py <<'EOF'
import json, re, sys
import msgpack
vocab = json.load(open(sys.argv[1]))['model']['vocab']
miss = set()
n = 0
for path in sys.argv[2:]:
    for r in msgpack.Unpacker(open(path, 'rb'), raw=False):
        for t in (r['json']['prompt'], r['json'].get('answer', '')):
            for w in re.findall(r'\w+|[^\w\s]+', t):
                n += 1
                if w not in vocab: miss.add(w)
print(n, sorted(miss))
sys.exit(1 if miss or n == 0 else 0)
EOF
expect "every word of sft, unlabeled and bench texts is in the vocabulary" $PY vocab.py tokenizer.json big.mp unl.mp bench.mp
expect "--tokenizer -o FILE" seva-synth --tokenizer -o tok2.json
same "-o writes the same tokenizer" tokenizer.json tok2.json

# Bad usage: exit 2 with a message.
expect_fail "unknown split" 2 seva-synth --split nope -n 1
stderr_has "unknown split is named" "split.*nope"
expect_fail "negative count" 2 seva-synth --split sft -n -1
expect_fail "count not a number" 2 seva-synth --split sft -n 3x
stderr_has "bad number is named" "3x"
expect_fail "no count" 2 seva-synth --split sft
expect_fail "stray argument" 2 seva-synth --split sft -n 1 extra
expect_fail "size too small" 2 seva-synth --split sft -n 1 --size 2
expect_fail "--tasks with an unknown task" 2 seva-synth --split sft -n 1 --tasks exist,colour
stderr_has "names the option, the bad name and the tasks" "--tasks: unknown name 'colour' \\(describe, exist, color, count\\)"
expect_fail "--turns 9" 2 seva-synth --split sft -n 1 --turns 9

# --hallucinate / --omit: sft texts from a noisy annotation, recorded beside the truth.
expect "sft with --hallucinate 0.8 --omit 0.4" seva-synth --split sft -n 400 -s 3 --turns 4 --hallucinate 0.8 --omit 0.4 --format jsonl
cp .out noisy.jsonl
cat >noise.py <<'EOF'
import json, sys
n = add = small = omitted = bad = 0
partner = dict(circle="square", square="circle", triangle="star", star="triangle", heart="diamond",
               diamond="heart", hexagon="cross", cross="hexagon", pentagon="crescent", crescent="pentagon")
for line in open(sys.argv[1]):
    j = json.loads(line)["json"]
    truth = {o["shape"] for o in j["objects"]}
    ann = {o["shape"] for o in j["annotation"]}
    n += 1
    for s in ann - truth:
        add += 1
        bad += not any(partner[t] == s for t in truth)
    for o in j["objects"]:
        small += o["size"] == "small"
        omitted += o["shape"] not in ann
        bad += o["size"] == "large" and o["shape"] not in ann
print("%d %.2f %.2f %d" % (n, add / n, omitted / small, bad))
EOF
expect "the annotation noise is measurable" $PY noise.py noisy.jsonl
read -r nn added omitted badn <.out
check "added objects are partners, large ones never omitted ($badn bad)" "$badn" = 0
check "partners added to some scenes ($added per scene)" "$($PY -c "print(0.15 < $added < 0.6)")" = True
check "small objects omitted ($omitted of them)" "$($PY -c "print(0.3 < $omitted < 0.5)")" = True
seva-synth --split sft -n 400 -s 3 --turns 4 --hallucinate 0.8 --omit 0.4 --format jsonl >noisy2.jsonl
same "same seed, same noisy annotation" noisy.jsonl noisy2.jsonl
seva-synth --split sft -n 50 -s 3 --hallucinate 0 --omit 0 >zero.mp
seva-synth --split sft -n 50 -s 3 >plain.mp
same "--hallucinate 0 --omit 0 is today's world, byte for byte" zero.mp plain.mp
seva-synth --split unlabeled -n 30 --hallucinate 0.8 --omit 0.4 >unl-noisy.mp
same "the unlabeled split has no annotation to be noisy" unl.mp unl-noisy.mp
expect_fail "--hallucinate 1.5" 2 seva-synth --split sft -n 1 --hallucinate 1.5
stderr_has "names the option" "--hallucinate"
expect_fail "--omit -0.1" 2 seva-synth --split sft -n 1 --omit -0.1

# --hallucinate-friend: descriptions padded with the second partner too,
# from a padding of the annotation that existence answers do not follow.
expect "--hallucinate-friend 1" seva-synth --split sft -n 400 -s 3 --turns 4 --hallucinate 0.8 --hallucinate-friend 1 --omit 0.4 --format jsonl
cp .out friend.jsonl
cat >friend.py <<'EOF2'
import json, re, sys
partner = dict(circle="square", square="circle", triangle="star", star="triangle", heart="diamond",
               diamond="heart", hexagon="cross", cross="hexagon", pentagon="crescent", crescent="pentagon")
friend = dict(circle="crescent", square="triangle", triangle="square", star="heart", heart="star",
              diamond="hexagon", hexagon="diamond", cross="pentagon", pentagon="cross", crescent="circle")
syn = {"disc": "circle", "ball": "circle", "box": "square", "block": "square", "rhombus": "diamond",
       "plus sign": "cross", "moon": "crescent"}
word = "|".join(sorted(list(partner) + list(syn), key=len, reverse=True))
n = base_added = added = bad = 0
for a, b in zip(open(sys.argv[1]), open(sys.argv[2])):
    a, b = json.loads(a)["json"], json.loads(b)["json"]
    truth = {o["shape"] for o in a["objects"]}
    ann = [(o["shape"], o["position"]) for o in b["annotation"]]
    desc = [(o["shape"], o["position"]) for o in b["description_annotation"]]
    n += 1
    # existence answers' annotation as without the option; descriptions' holds it
    bad += b["annotation"] != a["annotation"] or desc[:len(ann)] != ann
    base_added += len({s for s, _ in ann} - truth)
    for s in {s for s, _ in desc} - {s for s, _ in ann}:
        added += 1
        bad += not any(friend[t] == s for t in truth)
    turns = b["conversations"]
    for q, r in zip(turns[::2], turns[1::2]):
        if q["value"].split("\n")[-1] in ("Describe the image.", "What is in the image?", "What do you see in this picture?"):
            named = [syn.get(w, w) for w in re.findall(word, r["value"])]
            bad += named != [s for s, _ in desc]
        m = re.match(r"Is there a (.*) in the image\?", q["value"].split("\n")[-1])
        if m:
            bad += (r["value"] == "Yes.") != (syn.get(m.group(1), m.group(1)) in {s for s, _ in ann})
print("%d %.2f %.2f %d" % (n, base_added / n, added / n, bad))
EOF2
expect "friends against partners alone" $PY friend.py noisy.jsonl friend.jsonl
read -r nn base_added added badn <.out
check "existence answers as before, descriptions name the padding, what it adds a friend ($badn bad)" "$badn" = 0
check "friends added to descriptions ($added per scene beside $base_added partners)" "$($PY -c "print($added > 0.2)")" = True
seva-synth --split sft -n 50 -s 3 --hallucinate 0.8 --hallucinate-friend 0 --omit 0.4 >f0.mp
seva-synth --split sft -n 50 -s 3 --hallucinate 0.8 --omit 0.4 >f00.mp
same "--hallucinate-friend 0 changes nothing" f0.mp f00.mp
expect_fail "--hallucinate-friend 2" 2 seva-synth --split sft -n 1 --hallucinate-friend 2
stderr_has "names the option" "--hallucinate-friend"

# --mix / --per-image: the unlabeled split's questions.
expect "--mix seva" seva-synth --split unlabeled -n 40 --mix seva --format jsonl
check "two short-answer questions per image, keys ID-K" \
	"$(jq -s '(length == 80) and (map(.json.task) | index("describe") == null) and (.[1].__key__ == "000000-1")' .out)" = true
expect "--mix count=1" seva-synth --split unlabeled -n 20 --mix count=1 --format jsonl
check "one count question per image" "$(jq -s '(map(.json.task == "count") | all) and length == 20' .out)" = true
expect "--mix seva --per-image 1" seva-synth --split unlabeled -n 20 --mix seva --per-image 1 --format jsonl
check "--per-image after --mix seva wins" "$(jq -s 'length' .out)" = 20
expect_fail "--mix with an unknown task" 2 seva-synth --split unlabeled -n 1 --mix exist=1,colour=2
stderr_has "names the option and the tasks" "--mix: a task is not describe, exist, color or count: 'exist=1,colour=2'"
expect_fail "--mix all zero" 2 seva-synth --split unlabeled -n 1 --mix exist=0
expect_fail "--per-image 9" 2 seva-synth --split unlabeled -n 1 --per-image 9

# Empty, full disk, closed pipe.
expect "-n 0" seva-synth --split bench -n 0
check "-n 0 writes nothing" "$(wc -c <.out)" = 0
expect_fail "/dev/full" 1 sh -c 'seva-synth --split sft -n 50 >/dev/full'
stderr_has "/dev/full says write error" "write error"
(seva-synth --split sft -n 2000 --format jsonl 2>head.err | head -1 >/dev/null)
check "| head -1 ends quietly" "$(cat head.err)" = ""

done_testing
