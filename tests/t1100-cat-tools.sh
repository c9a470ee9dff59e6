#!/bin/bash
# Every record tool without a model, as DESIGN sec. 7 asks of each: bad
# input named (file, record, key) with exit 1, -k skips counted and exit 1,
# empty input gives nothing and exit 0, /dev/full exits 1 with one message,
# | head ends quietly, usage errors and out-of-range numbers exit 2. Then
# unknown fields through augment and pair, and shards against one run.
. "$(dirname "$0")/lib.sh"
PY=/usr/bin/python3
TOK=tok.json

seva-synth --tokenizer -o $TOK
seva-synth --split unlabeled -n 4 -s 2 >u.mp
seva-synth --split bench -n 1 -s 3 >b.mp
: >empty
# Three samples, the middle one bad in each way a reader or a stage can see.
$PY - <<'EOF'
import msgpack
good = list(msgpack.Unpacker(open("u.mp", "rb"), raw=False))
def put(name, bad):
    with open(name, "wb") as f:
        for r in [good[0], bad, good[2]]:
            f.write(bad if isinstance(r, bytes) else msgpack.packb(r, use_bin_type=True))
put("notimage.mp", dict(good[1], __key__="bad", png=b"not an image"))
put("notjson.mp", dict(good[1], __key__="bad", json="not a map"))
put("notmap.mp", msgpack.packb([1, 2, 3]))
# answers for seva-pair and seva-eval
with open("gen.mp", "wb") as f:
    for i, r in enumerate(good):
        f.write(msgpack.packb(dict(r, **{"response.txt": "A%d" % i, "aug.response.txt": "B%d" % i}), use_bin_type=True))
with open("nogen.mp", "wb") as f:
    for i, r in enumerate(good[:3]):
        f.write(msgpack.packb(dict(r, **{"response.txt": "A", "aug.response.txt": "B"}) if i != 1 else dict(r, __key__="bad"), use_bin_type=True))
bench = list(msgpack.Unpacker(open("b.mp", "rb"), raw=False))[:3]
with open("ans.mp", "wb") as f:
    for r in bench:
        f.write(msgpack.packb(dict(r, **{"response.txt": "Yes."}), use_bin_type=True))
with open("noans.mp", "wb") as f:
    for i, r in enumerate(bench):
        f.write(msgpack.packb(dict(r, **{"response.txt": "Yes."}) if i != 1 else dict(r, __key__="bad"), use_bin_type=True))
EOF
head -c 3000 u.mp >trunc.mp
printf '"a red circle"\n42\n"a square"\n' >bad.txt
printf '"a red circle"\n"a square"\n' >good.txt

# tool, good input, bad input, the pattern its message must match
sweep() {
	local tool=$1 good=$2 bad=$3 pat=$4 name=${1%% *}; shift 4
	expect_fail "$tool: bad input" 1 $tool "$@" $bad
	stderr_has "$tool: says where" "$pat"
	expect_fail "$tool -k: skips and says so (exit 3)" 3 $tool -k "$@" $bad
	# one wording for the count in every tool
	stderr_has "$tool -k: counts the skip" "^$name: 1 of 3 (samples|lines) skipped\$"
	expect_fail "$tool -k: a missing input is passed over" 3 $tool -k "$@" nosuchfile $good
	stderr_has "$tool -k: names it" "^$name: open 'nosuchfile'"
	stderr_has "$tool -k: counts it" "^$name: 1 inputs? could not be read\$"
	check "$tool -k: and reads the next input" "$(wc -c <"$TMP/.out")" -gt 0
	expect "$tool: empty input" $tool "$@" empty
	check "$tool: empty input, no output" "$(wc -c <"$TMP/.out")" = 0
	expect_fail "$tool > /dev/full" 1 sh -c "exec $tool $* $good >/dev/full"
	check "$tool > /dev/full: one message" "$(grep -c 'write error' "$TMP/.err")" = 1
	# eight copies of the input, keys made distinct (keys are unique in a stream)
	case $good in
	*.txt) (for _ in 1 2 3 4 5 6 7 8; do cat $good; done) >many.in ;;
	*) $PY -c 'import sys, msgpack
rs = list(msgpack.Unpacker(open(sys.argv[1], "rb"), raw=False))
sys.stdout.buffer.write(b"".join(msgpack.packb(dict(r, __key__="%s_%d" % (r["__key__"], i)), use_bin_type=True) for i in range(8) for r in rs))' $good >many.in ;;
	esac
	# The tool's message, if any, would be on .err; its status is SIGPIPE's or 0.
	sh -c "$tool $* many.in | head -c 1 >/dev/null" 2>"$TMP/.err"
	check "$tool | head: quiet" "$(wc -c <"$TMP/.err")" = 0
	expect_fail "$tool: unknown option" 2 $tool --no-such-option
}
sweep seva-cat u.mp notmap.mp "^seva-cat: notmap.mp: record 2: not a map"
sweep seva-augment u.mp notimage.mp "^seva-augment: notimage.mp: record 2 \(key bad\): field 'png'"
sweep seva-pair gen.mp nogen.mp "^seva-pair: nogen.mp: record 2 \(key bad\): no response.txt"
sweep seva-eval ans.mp noans.mp "^seva-eval: noans.mp: record 2 \(key bad\): no response.txt"
sweep "seva-tok $TOK" good.txt bad.txt "^seva-tok: bad.txt:2: want a JSON string"

# One wording for a skip in every tool (the reader's and the tool's own
# reasons alike): WHERE: WHY (skipped); without -k, no count of skips after
# the run stopped.
kline() {
	local tool=$1 bad=$2 why=$3
	expect_fail "$tool -k: skip" 3 $tool -k -o /dev/null $bad
	stderr_has "$tool -k: WHERE: WHY (skipped)" "^$tool: $bad: record 2 \\(key bad\\): $why \\(skipped\\)\$"
	expect_fail "$tool: no -k" 1 $tool -o /dev/null $bad
	check "$tool: no -k, no skip count" "$(grep -c 'skipped' "$TMP/.err")" = 0
}
kline seva-cat notjson.mp "field 'json': not valid JSON"
kline seva-augment notimage.mp "field 'png': cannot decode image: not a JPEG or PNG image"
kline seva-pair nogen.mp "no response.txt"
kline seva-eval noans.mp "no response.txt \\(run seva-generate first\\)"
# a nil or a number in a *.txt field is refused by every reader, not read
# as the text "null" (seva-eval scored it, seva-dpo trained on it)
$PY -c '
import msgpack
r = list(msgpack.Unpacker(open("ans.mp", "rb"), raw=False))
open("nilans.mp", "wb").write(b"".join(msgpack.packb(dict(x, **{"response.txt": v}), use_bin_type=True) for x, v in zip(r, ["Yes.", None, 5])))
'
expect_fail "seva-eval: nil response.txt" 3 seva-eval -k nilans.mp
stderr_has "refused as the wrong type" "^seva-eval: nilans.mp: record 2 \\(key [^)]*\\): field 'response.txt': wrong type \\(want text\\) \\(skipped\\)$"
stderr_has "a number too" "^seva-eval: nilans.mp: record 3 \\(key [^)]*\\): field 'response.txt': wrong type \\(want text\\) \\(skipped\\)$"
echo '{"__key__": "j", "response.txt": null}' >nil.jsonl
expect_fail "JSON lines: null text" 1 seva-cat nil.jsonl
stderr_has "refused the same" "^seva-cat: nil.jsonl: record 1 \\(key j\\): line 1: field 'response.txt': wrong type \\(want text\\)$"
expect_fail "seva-pair -q -k" 3 seva-pair -q -k nogen.mp
stderr_has "still counts the skip" "^seva-pair: 1 of 3 samples skipped"
expect_fail "seva-augment: wrong type named" 1 seva-augment notjson.mp
stderr_has "field and why" "^seva-augment: notjson.mp: record 2 \(key bad\): field 'json': not valid JSON"
expect_fail "truncated msgpack" 1 seva-augment trunc.mp
stderr_has "says truncated" "^seva-augment: trunc.mp: record 2: truncated msgpack"
expect_fail "seva-synth > /dev/full" 1 sh -c 'exec seva-synth --split sft -n 3 >/dev/full'
check "seva-synth > /dev/full: one message" "$(grep -c 'write error' "$TMP/.err")" = 1
expect_fail "seva-synth --tokenizer > /dev/full" 1 sh -c 'exec seva-synth --tokenizer >/dev/full'
expect_fail "seva-synth -o in a missing folder" 1 seva-synth --split sft -n 1 -o nodir/x.mp
stderr_has "names the path asked for" "create 'nodir/x.mp':"

# --help is asked-for output: usage on stdout, exit 0; a usage error is not:
# usage on stderr, nothing on stdout, exit 2 (git's and GNU's convention).
for t in cat synth augment pair eval generate sft dpo tok; do
	expect "seva-$t --help: exit 0" seva-$t --help
	check "seva-$t --help: usage on stdout" "$(head -c $((13 + ${#t})) "$TMP/.out")" = "usage: seva-$t "
	check "seva-$t --help: nothing on stderr" ! -s "$TMP/.err"
	expect "seva-$t -h: the same" seva-$t -h
	expect_fail "seva-$t, a usage error: exit 2" 2 seva-$t --no-such-option
	check "seva-$t, a usage error: nothing on stdout" ! -s "$TMP/.out"
	stderr_has "seva-$t, a usage error: usage on stderr" "^usage: seva-$t "
done

# numbers from argv
for a in "seva-synth --split sft -n -1" "seva-synth --split sft -n 1x" "seva-synth --split sft -n 1 --size 0" \
	"seva-augment -s -1" "seva-augment -j 100000" "seva-augment -r diffusion:t=1001" "seva-augment -r jitter:p=2" \
	"seva-cat --split p --per 0" "seva-pair --min-len -1" "seva-pair -s 99999999999999999999"; do
	expect_fail "$a: out of range" 2 $a u.mp
done
# -s: 0 to 2^53-1 in every tool, so that a seed survives JSON exactly
for a in "seva-synth --split sft -n 1" seva-augment seva-pair "seva-generate -m m" "seva-sft -m m -o o" "seva-dpo -m m -o o"; do
	expect_fail "$a -s 2^53: out of range" 2 $a -s 9007199254740992 empty
	stderr_has "$a -s 2^53: names the range" "^${a%% *}: -s: not an integer in \[0, 9007199254740991\]"
done
expect "seva-synth -s 2^53-1" seva-synth --split sft -n 1 -s 9007199254740991

# POPE files that do not line up: the answer file is named.
head -2 "$TOP/tests/fixtures/pope/answers.jsonl" >two.jsonl
expect_fail "POPE answers too short" 1 seva-eval --pope-questions "$TOP/tests/fixtures/pope/coco_pope_adversarial.jsonl" --pope-answers two.jsonl
stderr_has "names the answers" "^seva-eval: two.jsonl: ends after 2 questions"
head -2 "$TOP/tests/fixtures/pope/coco_pope_adversarial.jsonl" >q2.jsonl
expect_fail "POPE answers too long" 1 seva-eval --pope-questions q2.jsonl --pope-answers "$TOP/tests/fixtures/pope/answers.jsonl"
stderr_has "names the answers" "answers.jsonl: more answers than the 2 questions of 'q2.jsonl'"

# Unknown fields of every type through augment and pair, untouched.
seva-cat --jsonl --base64 u.mp | jq -c '. + {"note.txt": "keep ✓", "meta.json": {"a": [1, 2.5, null, "x"], "b": {"c": true}},
	"blob.bin": {"base64": "AAECAwT/"}}' >u.jsonl
expect "with unknown fields" seva-cat -o x.mp u.jsonl
unknown() { seva-cat --jsonl --base64 "$1" | jq -c '[.__key__, ."note.txt", ."meta.json", ."blob.bin"]' >"$2"; }
expect "augment" seva-augment -s 5 -o xa.mp x.mp
unknown x.mp want
unknown xa.mp got
same "augment keeps unknown fields" want got
seva-cat --jsonl --base64 xa.mp | jq -c '. + {"response.txt": ("A" + .__key__), "aug.response.txt": "B"}' >xg.jsonl
expect "pair" seva-pair -q -o xp.mp xg.jsonl
unknown xp.mp got
same "pair keeps unknown fields" want got

# Shards augmented apart, joined: the bytes of one run, in msgpack and tar.
expect "split" seva-cat --split part --per 3 x.mp
for f in part-*.tar; do seva-augment -s 5 -r mocov2 $f >$f.mp && seva-augment -s 5 -r mocov2 -t $f >$f.t; done
expect "one run" seva-augment -s 5 -r mocov2 -o one.mp x.mp
cat part-*.tar.mp >joined.mp
same "sharded augment = one run (msgpack)" one.mp joined.mp
expect "one run, tar" seva-augment -s 5 -r mocov2 -t -o one.tar x.mp
expect "tar shards joined" seva-cat -t -o joined.tar part-000000.tar.t part-000001.tar.t
same "sharded augment = one run (tar)" one.tar joined.tar

done_testing
