#!/bin/bash
# seva-cat: conversions tar <-> msgpack <-> JSON lines, split/join, field
# selection, LLaVA import, bad input.
. "$(dirname "$0")/lib.sh"
PY=/usr/bin/python3
FIX=$TOP/tests/fixtures

# A WebDataset shard made by GNU tar, members under a directory, compact JSON.
mkdir -p src/shard
printf 'What is red?' >src/shard/000001.prompt.txt
printf '{"prompt":"Is there a red circle?","n":3,"f":0.25,"l":[1,{"a":null}],"u":"é"}' >src/shard/000001.json
head -c 3000 /dev/urandom >src/shard/000001.jpg
printf '{"op":"diffusion","t":500}' >src/shard/000001.aug.json
printf 'second' >src/shard/000002.txt
head -c 10 /dev/urandom >src/shard/000002.png
tar -C src -cf in.tar shard/000001.prompt.txt shard/000001.json shard/000001.jpg shard/000001.aug.json \
	shard/000002.txt shard/000002.png

expect "tar to msgpack" seva-cat -o a.mp in.tar
expect "msgpack to tar" seva-cat -t -o a.tar a.mp
expect "tar -t lists the shard" tar -tf a.tar
tar -tf a.tar >list
printf '%s\n' 000001.prompt.txt 000001.json 000001.jpg 000001.aug.json 000002.txt 000002.png >want
same "members in order, directory part dropped" list want
mkdir x
tar -C x -xf a.tar
ok_all=1
for f in src/shard/*; do cmp -s "$f" "x/${f##*/}" || { ok_all=0; echo "differs: ${f##*/}" | diag; }; done
check "tar -> msgpack -> tar: same member bytes" $ok_all = 1
expect "tar to tar" seva-cat -t -o b.tar a.tar
same "tar output is deterministic" a.tar b.tar
expect "stdin reads msgpack" sh -c 'seva-cat -t < a.mp > c.tar'
same "stdin and file give the same tar" a.tar c.tar
gzip -c a.tar >a.tar.gz
zstd -q -c a.tar >a.tar.zst
expect "reads .tar.gz" seva-cat -o gz.mp a.tar.gz
same ".tar.gz reads as the tar" a.mp gz.mp
expect "reads .tar.zst" seva-cat -o zst.mp a.tar.zst
same ".tar.zst reads as the tar" a.mp zst.mp

# Python's msgpack decodes what we write, with the documented types.
expect "python msgpack decodes the stream" $PY -c '
import msgpack, sys
recs = list(msgpack.Unpacker(open("a.mp", "rb"), raw=False))
assert [r["__key__"] for r in recs] == ["000001", "000002"], recs
r = recs[0]
assert list(r)[0] == "__key__"
assert r["prompt.txt"] == "What is red?"
assert r["json"] == {"prompt": "Is there a red circle?", "n": 3, "f": 0.25, "l": [1, {"a": None}], "u": "\u00e9"}, r["json"]
assert isinstance(r["json"]["n"], int) and isinstance(r["json"]["f"], float)
assert isinstance(r["jpg"], bytes) and len(r["jpg"]) == 3000
assert r["aug.json"] == {"op": "diffusion", "t": 500}
'

# JSON lines through jq
expect "to JSON lines" seva-cat --jsonl -o a.jsonl a.mp
expect "jq reads the lines" jq -e -s 'length == 2 and .[0].json.n == 3 and .[0].jpg.bytes == 3000
	and (.[0].jpg.sha256 | length) == 64 and .[1].txt == "second"' a.jsonl
sha=$(sha256sum src/shard/000001.jpg | cut -d" " -f1)
expect "sha256 of the bytes field" jq -e --arg s "$sha" '.jpg.sha256 == $s or .__key__ == "000002"' a.jsonl
expect "JSON lines with --base64" seva-cat --jsonl --base64 -o b.jsonl a.mp
expect "edit with jq, read back" sh -c 'jq -c ".\"prompt.txt\" |= (. // \"\" | ascii_upcase)" b.jsonl > e.jsonl'
expect "base64 JSON lines to tar" seva-cat -t -o e.tar e.jsonl
mkdir y
tar -C y -xf e.tar
same "bytes survive JSON lines" src/shard/000001.jpg y/000001.jpg
check "jq edit arrived" "$(cat y/000001.prompt.txt)" = "WHAT IS RED?"
expect_fail "digest-only JSON lines cannot become bytes" 1 seva-cat -t -o f.tar a.jsonl
stderr_has "says to use --base64" "record 1 \(key 000001\).*field 'jpg'.*--base64"

# split and join
$PY -c '
import msgpack, sys
with open("five.mp", "wb") as f:
    for i in range(5):
        f.write(msgpack.packb({"__key__": "%03d" % i, "txt": "t%d" % i, "png": bytes([i]) * 7}, use_bin_type=True))
'
expect "split into shards of 2" seva-cat --split part --per 2 five.mp
check "three shards" "$(ls part-*.tar | tr '\n' ' ')" = "part-000000.tar part-000001.tar part-000002.tar "
check "no temp files left" "$(ls | grep -c tmp)" = 0
expect "join the shards" seva-cat -o joined.mp part-000000.tar part-000001.tar part-000002.tar
same "split then join gives the stream back" five.mp joined.mp
expect "select fields" seva-cat --jsonl -f txt -o sel.jsonl five.mp
expect "only __key__ and txt" jq -e -s 'all(.[]; keys == ["__key__", "txt"])' sel.jsonl
expect "drop fields" seva-cat --jsonl -x txt -o drop.jsonl five.mp
expect "txt dropped" jq -e -s 'all(.[]; keys == ["__key__", "png"])' drop.jsonl

# LLaVA import
expect_fail "LLaVA: missing image fails" 1 seva-cat --llava "$FIX/llava/data.json" --images "$FIX/llava/images" -o l.mp
stderr_has "names the record and the file" "^seva-cat: .*data.json: record 3 \(id 3\): image '.*missing.jpg': No such file"
check "failed run leaves no output" ! -e l.mp
expect_fail "LLaVA with -k: skips, counts, exit 3" 3 seva-cat -k --llava "$FIX/llava/data.json" \
	--images "$FIX/llava/images" -o l.mp
stderr_has "skip counted" "1 of 3 samples skipped"
# ids that are one key (equal, or equal once '/' and '.' become '_') would
# give one sample the other's image: the second is refused, the first named
cat >lc.json <<'EOF'
[{"id": "vg/123", "image": "coco/000000000001.jpg", "conversations": [{"from": "human", "value": "<image>\nWhat colour?"}]},
 {"id": "vg_123", "image": "coco/000000000002.png", "conversations": [{"from": "human", "value": "<image>\nWhat shape?"}]},
 {"id": "a", "image": "coco/000000000001.jpg", "conversations": [{"from": "human", "value": "Q?"}]},
 {"id": "a", "image": "coco/000000000002.png", "conversations": [{"from": "human", "value": "Q?"}]}]
EOF
expect_fail "LLaVA: ids colliding as keys fail" 1 seva-cat --llava lc.json --images "$FIX/llava/images" -t -o lc.tar
stderr_has "names the record and the earlier one" "^seva-cat: lc.json: record 2 \(id vg_123\): key 'vg_123' already used by record 1$"
check "no tar written" ! -e lc.tar
expect_fail "LLaVA -k: the repeats skipped" 3 seva-cat -k --llava lc.json --images "$FIX/llava/images" -t -o lc.tar
stderr_has "the duplicate id too" "^seva-cat: lc.json: record 4 \(id a\): key 'a' already used by record 3 \(skipped\)$"
stderr_has "counted" "^seva-cat: 2 of 4 samples skipped$"
expect "the tar reads back" seva-cat --jsonl -o lc.jsonl lc.tar
check "one sample a key, the first's image" "$(jq -r '.__key__ + ":" + .json.image_id' lc.jsonl | tr '\n' ' ')" = \
	"vg_123:coco/000000000001.jpg a:coco/000000000001.jpg "
# text-only conversations (LLaVA-665k's ShareGPT part) have no image to
# align on: left out with one closing line, not an error
cat >lt.json <<'EOF'
[{"id": "t1", "conversations": [{"from": "human", "value": "Hi?"}, {"from": "gpt", "value": "Hello."}]},
 {"id": "i1", "image": "coco/000000000001.jpg", "conversations": [{"from": "human", "value": "<image>\nWhat colour?"}]},
 {"id": "t2", "conversations": [{"from": "human", "value": "Why?"}]}]
EOF
expect "LLaVA: text-only items left out" seva-cat --llava lt.json --images "$FIX/llava/images" --jsonl -o lt.jsonl
stderr_has "one line counts them" "^seva-cat: lt.json: 2 of 3 records are text-only \(no \"image\"\), left out$"
check "the image item kept" "$(jq -r .__key__ lt.jsonl)" = i1
# the same question rule as every other tool: "user" asks as "human" does
cat >lu.json <<'EOF'
[{"id": "u1", "image": "coco/000000000001.jpg", "conversations": [{"from": "user", "value": "\t<image>\nWhat colour?\r\n"}, {"from": "assistant", "value": "Red."}]}]
EOF
expect "LLaVA: a \"user\" turn is the question" seva-cat --llava lu.json --images "$FIX/llava/images" --jsonl -o lu.jsonl
check "placeholder removed, trimmed as elsewhere" "$(jq -r .json.prompt lu.jsonl)" = "What colour?"
# every asking turn a question (--turns), LLaVA's answer-format suffix off
# (--strip-format), as SeVa's step 1 does; and SeVa's own step-1 lists
cat >lm.json <<'EOF'
[{"id": "m1", "image": "coco/000000000001.jpg", "conversations": [
   {"from": "human", "value": "<image>\nWho wrote this book?\nAnswer the question using a single word or phrase."},
   {"from": "gpt", "value": "Me."}, {"from": "user", "value": "Is it red?"}, {"from": "gpt", "value": "No."},
   {"from": "human", "value": "Which one?\nAnswer with the option's letter from the given choices directly."},
   {"from": "gpt", "value": "A"}]},
 {"id": "m2", "image": "coco/000000000002.png", "conversations": [{"from": "human", "value": "What is it?\n<image>"}]}]
EOF
expect "LLaVA --turns all: one sample per question" seva-cat --llava lm.json --images "$FIX/llava/images" --turns all --jsonl -o lm.jsonl
check "keys: the id, then ID_qN" "$(jq -r .__key__ lm.jsonl | tr '\n' ' ')" = "m1 m1_q2 m1_q3 m2 "
check "the questions in turn order, suffixes kept" "$(jq -c .json.prompt lm.jsonl | sed -n 3p)" = \
	'"Which one?\nAnswer with the option'"'"'s letter from the given choices directly."'
expect "--turns 2 --strip-format" seva-cat --llava lm.json --images "$FIX/llava/images" --turns 2 --strip-format --jsonl -o lm2.jsonl
check "at most two questions an item, LLaVA's format instructions gone" \
	"$(jq -r '.__key__ + "=" + .json.prompt' lm2.jsonl | tr '\n' '|')" = "m1=Who wrote this book?|m1_q2=Is it red?|m2=What is it?|"
expect "--turns first is the default" seva-cat --llava lm.json --images "$FIX/llava/images" --turns first --jsonl -o lm1.jsonl
check "one sample an item" "$(jq -r .__key__ lm1.jsonl | tr '\n' ' ')" = "m1 m2 "
expect_fail "--turns 0: usage error" 2 seva-cat --llava lm.json --images "$FIX/llava/images" --turns 0
stderr_has "names the option and the values" "--turns \(first, all or a count\)"
expect_fail "--turns without --llava: usage error" 2 seva-cat --turns all a.mp
printf '%s\n' '{"image": "coco/000000000001.jpg", "text": "Is this a religious book?"}' '' \
	'{"image": "coco/000000000002.png", "text": "Who wrote this book?"}' >step1.jsonl
expect "SeVa's step-1 list (JSON lines of image and text)" seva-cat --llava step1.jsonl --images "$FIX/llava/images" --jsonl -o s1.jsonl
check "keys from the record numbers, the text the question" \
	"$(jq -r '.__key__ + "=" + .json.prompt + "=" + .json.image_id' s1.jsonl | tr '\n' '|')" = \
	"q000001=Is this a religious book?=coco/000000000001.jpg|q000002=Who wrote this book?=coco/000000000002.png|"
printf '%s\n' '{"image": "coco/000000000001.jpg", "text": "Q?"}' 'not json' >badl.jsonl
expect_fail "JSON lines with a bad line" 1 seva-cat --llava badl.jsonl --images "$FIX/llava/images" --jsonl -o bad.jsonl
stderr_has "names the file and the line" "badl.jsonl: line 2: not a JSON object"
expect "LLaVA import to tar" seva-cat -t -o l.tar l.mp
tar -tf l.tar >llist
printf '%s\n' 000000000001.jpg 000000000001.json coco_2_v1.png coco_2_v1.json >lwant
same "keys sanitised, image under its extension" llist lwant
mkdir z
tar -C z -xf l.tar
same "image bytes kept" "$FIX/llava/images/coco/000000000001.jpg" z/000000000001.jpg
expect "LLaVA json fields" jq -e '.prompt == "What colour is the image?" and .image_id == "coco/000000000001.jpg"
	and .id == "000000000001" and (.conversations | length) == 4' z/000000000001.json
expect "trailing <image> removed" jq -e '.prompt == "Describe the image."' z/coco_2_v1.json

# bad input
head -c 2000 a.tar >trunc.tar
expect_fail "truncated tar" 1 seva-cat -o t.mp trunc.tar
stderr_has "names file, record, key, member" "^seva-cat: trunc.tar: record 1 \(key 000001\): member '000001\\."
check "no output file on failure" ! -e t.mp
# Broken inside the first member of the second sample: the first is whole.
mkdir -p cut
printf 'first' >cut/000001.txt
head -c 3000 /dev/urandom >cut/000002.bin
tar -C cut -cf cut.tar 000001.txt 000002.bin
head -c 1636 cut.tar >cut2.tar
expect_fail "truncated in the next sample" 1 seva-cat --jsonl cut2.tar
stderr_has "names the broken sample" "^seva-cat: cut2.tar: record 2 \(key 000002\): member '000002.bin'"
check "the sample before it is kept" "$(jq -r '.__key__ + " " + .txt' "$TMP/.out")" = "000001 first"
# Cut on a block boundary between members: libarchive sees a tar that just
# ends; without the end blocks it is cut short.
head -c 1024 cut.tar >cut3.tar
expect_fail "cut between members" 1 seva-cat --jsonl cut3.tar
stderr_has "says so" "^seva-cat: cut3.tar: record 1 \(key 000001\): ends inside the archive, without its end blocks"
expect_fail "... from a pipe too" 1 sh -c 'cat cut3.tar | seva-cat --jsonl'
head -c 5632 cut.tar >whole.tar
expect "the end blocks without the padding are a whole tar" seva-cat --jsonl whole.tar
gzip -c cut.tar >cut.tar.gz
expect "a compressed tar" seva-cat --jsonl cut.tar.gz
head -c 3100 a.mp >trunc.mp
expect_fail "truncated msgpack" 1 seva-cat -o t.mp trunc.mp
stderr_has "says truncated" "^seva-cat: trunc.mp: record 1: truncated msgpack"
expect_fail "truncated msgpack with -k" 3 seva-cat -k -o t.mp trunc.mp
stderr_has "counts the skip" "1 of 1 samples skipped"
cat a.mp trunc.mp >half.mp
expect_fail "-k keeps what came before" 3 seva-cat -k -o t.mp half.mp
check "two samples kept" "$(seva-cat --jsonl t.mp | wc -l)" = 2
$PY -c '
import msgpack
with open("types.mp", "wb") as f:
    f.write(msgpack.packb({"__key__": "a", "txt": "ok"}))
    f.write(msgpack.packb({"__key__": 7, "txt": "bad key"}))
    f.write(msgpack.packb([1, 2]))
    f.write(msgpack.packb({"__key__": "d", "json": "{not json"}))
    f.write(msgpack.packb({"__key__": "e", "txt": "fine"}))
'
expect_fail "wrong types" 1 seva-cat -o t.mp types.mp
stderr_has "key not a string" "types.mp: record 2: __key__ is not a string"
expect_fail "wrong types with -k" 3 seva-cat -k --jsonl -o t.jsonl types.mp
stderr_has "not a map" "types.mp: record 3: not a map"
stderr_has "bad JSON text" "types.mp: record 4 \(key d\): field 'json': not valid JSON"
stderr_has "three skipped" "3 of 5 samples skipped"
check "good samples kept" "$(jq -r .__key__ t.jsonl | tr '\n' ' ')" = "a e "
# a sample the output cannot hold (a field name with '/' in a tar) is the
# tool's refusal, in the same words, named where it was read
$PY -c '
import msgpack
with open("slash.mp", "wb") as f:
    for k, name in [("a", "x.txt"), ("b", "d/x.txt"), ("c", "x.txt")]:
        f.write(msgpack.packb({"__key__": k, name: "v"}))
'
expect_fail "tar: a field name with '/'" 3 seva-cat -k -t -o slash.tar slash.mp
stderr_has "WHERE: WHY (skipped)" "^seva-cat: slash.mp: record 2 \(key b\): a tar field name cannot be empty or hold '/' \(skipped\)$"
check "the others written" "$(tar -tf slash.tar | tr '\n' ' ')" = "a.x.txt c.x.txt "
printf '\202\247__key__\241a\241x\337\377\377\377\377' >hugemap.mp
expect_fail "a 5-byte map of 4 billion entries" 1 seva-cat -o t.mp hugemap.mp
stderr_has "is only truncated" "hugemap.mp: record 1: truncated msgpack"
printf 'hello world\n' >garbage
expect_fail "garbage" 1 seva-cat garbage
stderr_has "unknown format" "garbage: not a tar shard, a msgpack stream or JSON lines"
expect_fail "missing file" 1 seva-cat nosuchfile
stderr_has "names the file" "nosuchfile"
mkdir -p dup
printf a >dup/1.txt; printf b >dup/2.txt; printf c >dup/1.json
tar -C dup -cf dup.tar 1.txt 2.txt 1.json
expect_fail "key not adjacent" 1 seva-cat -o t.mp dup.tar
stderr_has "says not adjacent" "record 3 \(key 1\): .*not adjacent"
: >empty
expect "empty input" seva-cat -o empty.out empty
check "empty input, empty output" "$(stat -c %s empty.out)" = 0
expect "empty stdin to tar" sh -c 'seva-cat -t < /dev/null > empty.tar'
check "no bytes for no samples" "$(stat -c %s empty.tar)" = 0
expect "-o /dev/null" seva-cat -o /dev/null a.mp
check "/dev/null is still a device" -c /dev/null
expect_fail "writing to /dev/full fails" 1 sh -c 'seva-cat a.mp > /dev/full'
stderr_has "write error" "write error"
$PY -c '
import msgpack
with open("big.mp", "wb") as f:
    for i in range(3000):
        f.write(msgpack.packb({"__key__": "%06d" % i, "png": b"x" * 1000, "txt": "t"}, use_bin_type=True))
'
(seva-cat -t big.mp 2>head.err; echo $? >head.rc) | head -c 100 >/dev/null
check "| head ends quietly" "$(cat head.err)" = ""
check "| head: killed by SIGPIPE or clean" "$(cat head.rc)" -eq 141 -o "$(cat head.rc)" -eq 0
expect_fail "usage error" 2 seva-cat --per 0 a.mp
expect_fail "unknown option" 2 seva-cat --bogus
# -- binary output refuses a terminal (script(1) gives the tool a pseudo-terminal) --
if command -v script >/dev/null 2>&1; then
	seva-synth --split unlabeled -n 1 >one.msgpack
	expect_fail "seva-synth onto a terminal: refused" 1 script -qec "seva-synth --split unlabeled -n 1" /dev/null
	check "says why, and writes no bytes" "$(grep -c 'stdout is a terminal: refusing to write msgpack' .out)" = 1
	check "no msgpack bytes on the screen" "$(grep -c '__key__' .out)" = 0
	expect_fail "seva-cat -t onto a terminal: refused" 1 script -qec "seva-cat -t one.msgpack" /dev/null
	check "names tar" "$(grep -c 'refusing to write a tar stream' .out)" = 1
	expect "seva-cat --jsonl onto a terminal: text is fine" script -qec "seva-cat --jsonl one.msgpack" /dev/null
	check "the JSON line is there" "$(grep -c '__key__' .out)" = 1
	expect "into a pipe from a terminal session: fine" script -qec "seva-cat one.msgpack | cat >piped.msgpack" /dev/null
	same "the piped stream is the stream" one.msgpack piped.msgpack
	expect "progress on a terminal" script -qec "seva-synth --split unlabeled -n 3 -o three.msgpack" /dev/null
	check "ends in one summary line: the count and the time" "$(grep -c 'seva-synth: 3 images in [0-9.]* s' .out)" = 1
	expect "... and -q" script -qec "seva-synth -q --split unlabeled -n 3 -o three.msgpack" /dev/null
	check "leaves the terminal alone" "$(grep -c 'images in' .out)" = 0
fi
done_testing
