#!/bin/bash
# seva-pair: which samples become pairs, the pair's fields, the ablation
# switches, the exports, bad input.
. "$(dirname "$0")/lib.sh"
PY=/usr/bin/python3

# Generated samples as seva-generate leaves them: key, clean answer, answer
# on the augmented view.
$PY -c '
import msgpack
rows = [("a", "A red circle.</s>", "A blue circle."),
        ("b", "Yes", "Yes"),
        ("c", "Yes.", "  yes. "),
        ("d", "No", "Yes<|eot_id|>"),
        ("e", "Two circles.<|im_end|>junk", "Three.")]
with open("gen.mp", "wb") as f:
    for k, c, r in rows:
        f.write(msgpack.packb({"__key__": k, "png": b"\x89PNG-" + k.encode(),
            "json": {"prompt": "<image>\nQuestion " + k},
            "aug.json": {"ops": [{"op": "diffusion", "t": 500}], "seed": 1},
            "aug.png": b"aug", "response.txt": c, "aug.response.txt": r,
            "gen.json": {"model": "m"}, "note.txt": "kept " + k, "extra.json": {"n": [1, 2.5]},
            "blob.bin": b"\x00\xff", "ref.json": {"stale": 1}}, use_bin_type=True))
    # LLaVA-style question, no aug.json
    f.write(msgpack.packb({"__key__": "f", "jpg": b"jpeg",
        "json": {"conversations": [{"from": "human", "value": "Describe.\n<image>"}, {"from": "gpt", "value": "x"}]},
        "response.txt": "A cat.", "aug.response.txt": "A dog."}, use_bin_type=True))
'
keys() { jq -r .__key__ "$1" | tr '\n' ' '; }

expect "pairs" seva-pair -o p.mp gen.mp
stderr_has "stats on stderr" "read 6, kept 5, dropped: 1 identical, 0 too short, 0 truncated, 0 missing fields"
seva-cat --jsonl -o p.jsonl p.mp
check "identical answers dropped, the rest kept" "$(keys p.jsonl)" = "a c d e f "
expect "pair fields: unknown ones pass through, the answers, aug.* but the view's base and stale ones go" jq -e -s '.[0] | keys_unsorted == ["__key__", "png", "json", "aug.png", "note.txt", "extra.json", "blob.bin", "prompt.txt", "chosen.txt", "rejected.txt", "pair.json"]' p.jsonl
expect "unknown fields untouched" jq -e -s '.[0] | ."note.txt" == "kept a" and ."extra.json" == {"n": [1, 2.5]} and ."blob.bin".bytes == 2' p.jsonl
expect "chosen is the clean answer, markers stripped" jq -e -s '.[0]."chosen.txt" == "A red circle." and .[0]."rejected.txt" == "A blue circle."' p.jsonl
expect "text after an end-of-turn marker cut" jq -e -s '.[3]."chosen.txt" == "Two circles." and .[2]."rejected.txt" == "Yes"' p.jsonl
expect "prompt without <image>" jq -e -s '.[0]."prompt.txt" == "Question a" and .[4]."prompt.txt" == "Describe."' p.jsonl
expect "pair.json provenance" jq -e -s '.[0]."pair.json" == {"source": "a", "recipe": {"ops": [{"op": "diffusion", "t": 500}], "seed": 1}, "filter": "differ", "mode": "augment", "swap": false, "truncated": {"chosen": null, "rejected": null}}' p.jsonl
expect "recipe null without aug.json" jq -e -s '.[4]."pair.json".recipe == null and (.[4] | has("jpg"))' p.jsonl
expect "clean image bytes kept" $PY -c '
import msgpack
r = next(msgpack.Unpacker(open("p.mp", "rb"), raw=False))
assert r["png"] == b"\x89PNG-a", r["png"]
assert "response.txt" not in r
assert r["aug.png"] == b"aug", "aug.json without a preview: aug.png is the view, kept"
'
$PY -c '
import msgpack
with open("prev.mp", "wb") as f:
    for k, base in (("clean", "clean"), ("based", "aug.base.png")):
        f.write(msgpack.packb({"__key__": k, "png": b"p", "json": {"prompt": "Q"},
            "aug.json": {"ops": [{"op": "diffusion", "t": 500}], "seed": 1, "preview": True, "base": base},
            "aug.png": b"preview", "aug.base.png": b"base", "response.txt": "A", "aug.response.txt": "B"},
            use_bin_type=True))
'
expect "pairs of previews" seva-pair -o prev-p.mp prev.mp
seva-cat --jsonl -o prev.jsonl prev-p.mp
check "a preview over the clean image: every aug.* field goes; over pixel ops: aug.base.png stays" \
	"$(jq -c '[.__key__, (keys_unsorted | map(select(startswith("aug."))))]' prev.jsonl | tr '\n' ' ')" = \
	'["clean",[]] ["based",["aug.base.png"]] '

expect "--normalize" seva-pair --normalize -o n.mp gen.mp
seva-cat --jsonl -o n.jsonl n.mp
check "case and spacing differences dropped" "$(keys n.jsonl)" = "a d e f "
expect "--min-len" seva-pair -q --min-len 6 -o m.mp gen.mp
check "-q: no stats" ! -s "$TMP/.err"
seva-cat --jsonl -o m.jsonl m.mp
check "short answers dropped" "$(keys m.jsonl)" = "a e f "
expect "filter recorded" jq -e -s '.[0]."pair.json".filter == "differ,min-len=6"' m.jsonl
expect "--swap" seva-pair --swap -o s.mp gen.mp
seva-cat --jsonl -o s.jsonl s.mp
expect "roles reversed" jq -e -s '.[0]."chosen.txt" == "A blue circle." and .[0]."rejected.txt" == "A red circle." and .[0]."pair.json".swap == true' s.jsonl

expect "--random-negative" seva-pair --random-negative -s 7 -o r1.mp gen.mp
expect "same seed again" seva-pair --random-negative -s 7 -o r2.mp gen.mp
same "random negative is deterministic" r1.mp r2.mp
seva-cat --jsonl -o r.jsonl r1.mp
expect "rejected is another sample's clean answer" jq -e -s '
	[.[]."chosen.txt"] as $c | all(.[]; ."rejected.txt" as $r | ($c | index($r)) != null and ."rejected.txt" != ."chosen.txt")
	and all(.[]; ."pair.json".mode == "random-negative")' r.jsonl
seva-pair --random-negative -s 8 -o r3.mp gen.mp 2>/dev/null
check "another seed draws other negatives" "$(cmp -s r1.mp r3.mp && echo same)" = ""
# The spool is a fresh temporary (mkdtemp), not TMPDIR/seva-pair.PID.msgpack:
# a directory planted under that name (the pid is the shell's, which exec
# keeps) neither stops the run nor is written into, and the run leaves
# nothing of its own in TMPDIR.
mkdir sp
expect "--random-negative with its old spool name taken" env TMPDIR="$TMP/sp" sh -c \
	'mkdir "$TMPDIR/seva-pair.$$.msgpack" && exec seva-pair -q --random-negative -s 7 -o r4.mp gen.mp'
same "... gives the same pairs" r1.mp r4.mp
check "... and leaves TMPDIR as it was" "$(find sp | wc -l)" = 2

# exports
expect "exports" seva-pair -q --trl trl.jsonl --seva seva.json --images imgs -o /dev/null gen.mp
check "/dev/null is still a device" -c /dev/null
expect "exports load in python" $PY -c '
import json
trl = [json.loads(l) for l in open("trl.jsonl")]
assert len(trl) == 5, len(trl)
t = trl[0]
assert t["prompt"] == [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Question a"}]}], t
assert t["chosen"] == [{"role": "assistant", "content": [{"type": "text", "text": "A red circle."}]}]
assert t["rejected"][0]["content"][0]["text"] == "A blue circle."
assert t["images"] == ["imgs/a.png"]
assert open(t["images"][0], "rb").read() == b"\x89PNG-a"
s = json.load(open("seva.json"))
assert len(s) == 5 and s[0] == {"id": "a", "image_id": "a.png", "question": "Question a", "chosen": "A red circle.", "reject": "A blue circle."}, s[0]
assert s[4]["image_id"] == "f.jpg"
'
expect "empty input" seva-pair -q -o e.mp /dev/null
check "no output" "$(stat -c %s e.mp)" = 0
expect "empty input exports" seva-pair -q --trl e.jsonl --seva e.json --images eimg -o /dev/null /dev/null
expect "empty exports are valid" $PY -c 'import json; assert json.load(open("e.json")) == []; assert open("e.jsonl").read() == ""'

# bad input
$PY -c '
import msgpack
with open("bad.mp", "wb") as f:
    f.write(msgpack.packb({"__key__": "x", "png": b"p", "json": {"prompt": "Q"}, "response.txt": "A", "aug.response.txt": "B"}))
    f.write(msgpack.packb({"__key__": "y", "png": b"p", "json": {"prompt": "Q"}, "response.txt": "A"}))
    f.write(msgpack.packb({"__key__": "z", "png": b"p", "json": {"prompt": "Q"}, "response.txt": {"a": 1}, "aug.response.txt": "B"}))
    f.write(msgpack.packb({"__key__": "w", "png": b"p", "response.txt": "A", "aug.response.txt": "B"}))
    f.write(msgpack.packb({"__key__": "v", "json": {"prompt": "Q"}, "response.txt": "A", "aug.response.txt": "B"}))
'
expect_fail "missing field" 1 seva-pair -o b.mp bad.mp
stderr_has "names record and field" "bad.mp: record 2 \(key y\): no aug.response.txt"
expect_fail "-k skips and counts" 3 seva-pair -k -o b.mp bad.mp
stderr_has "wrong type named" "record 3 \(key z\): field 'response.txt': wrong type"
stderr_has "no prompt named" "record 4 \(key w\): no json"
stderr_has "no image named" "record 5 \(key v\): no clean image"
stderr_has "counted (the wrong type is an unreadable record)" "read 5, kept 1, .* 3 missing fields, 1 bad"
seva-cat --jsonl -o b.jsonl b.mp
check "the good one kept" "$(keys b.jsonl)" = "x "
head -c 150 gen.mp >trunc.mp
expect_fail "truncated input" 1 seva-pair -o t.mp trunc.mp
stderr_has "says truncated" "trunc.mp: record 1: truncated msgpack"
expect_fail "/dev/full" 1 sh -c 'seva-pair gen.mp > /dev/full'
stderr_has "write error" "write error"
# Every output is finished before any is published: pairs that cannot be
# written leave no exports behind, and an export that fails leaves no pairs.
mkdir fullimg
expect_fail "pairs to /dev/full with exports: exit 1" 1 sh -c \
	'seva-pair -q --trl full.jsonl --seva full.json --images fullimg gen.mp > /dev/full'
check "... and neither export is published" "$(ls full.jsonl full.json 2>/dev/null | wc -l)" = 0
check "... nor left half-written" "$(ls | grep -c '^full\.json.*\.tmp\.')" = 0
expect_fail "an export to /dev/full: exit 1" 1 seva-pair -q --trl /dev/full --seva full2.json \
	--images fullimg -o full2.mp gen.mp
check "... and neither the pairs nor the other export are published" \
	"$(ls full2.mp full2.json 2>/dev/null | wc -l)" = 0
$PY -c '
import msgpack
with open("big.mp", "wb") as f:
    for i in range(3000):
        f.write(msgpack.packb({"__key__": "%05d" % i, "png": b"p" * 500, "json": {"prompt": "Q"}, "response.txt": "A%d" % i, "aug.response.txt": "B"}, use_bin_type=True))
'
(seva-pair -q big.mp 2>head.err; echo $? >head.rc) | head -c 100 >/dev/null
check "| head ends quietly" "$(cat head.err)" = ""
# A key is a file name under --images: one that climbs out of the folder
# (or that any file system would read as another) is a bad record.
mkdir -p deep/er
$PY -c '
import msgpack
with open("deep/er/trav.mp", "wb") as f:
    for k in ["../../x", "ok", "..", ".hidden", "a/b", "a.b"]:
        f.write(msgpack.packb({"__key__": k, "png": b"\x89PNG-" + k.encode(), "json": {"prompt": "Q"},
            "response.txt": "A", "aug.response.txt": "B"}, use_bin_type=True))
'
cd deep/er
expect_fail "key '../../x' with --images" 1 seva-pair -q --trl t.jsonl --images imgs -o /dev/null trav.mp
stderr_has "is refused, named" "^seva-pair: trav.mp: record 1 \(key \.\./\.\./x\): __key__ holds '/' or '\.'"
expect_fail "-k: every unfit key skipped" 3 seva-pair -q -k --trl t.jsonl --images imgs -o /dev/null trav.mp
stderr_has "counted" "^seva-pair: 5 of 6 samples skipped$"
check "nothing written outside imgs" "$(cd "$TMP/deep" && find . -name '*.png' | tr '\n' ' ')" = "./er/imgs/ok.png "
cd "$TMP"
expect_fail "usage: --images needs an export" 2 seva-pair --images d gen.mp
expect_fail "usage: bad --min-len" 2 seva-pair --min-len -1 gen.mp
# -- answers cut at the token limit (gen.json's finish, as seva-generate writes it) --
$PY -c '
import msgpack
fin = {"t1": ("stop", "length"), "t2": ("length", "stop"), "t3": ("stop", "stop")}
with open("cut.mp", "wb") as f:
    for k, (c, a) in fin.items():
        f.write(msgpack.packb({"__key__": k, "png": b"png", "json": {"prompt": "Describe."},
            "response.txt": "A cat " + k, "aug.response.txt": "A dog " + k,
            "gen.json": {"model": "m", "finish": {"clean": c, "aug": a}}}, use_bin_type=True))
'
expect "truncated answers: kept and flagged" seva-pair -o cut.out.mp cut.mp
stderr_has "counted, and the way to drop them named" "2 pairs hold an answer cut at the token limit.*--drop-truncated"
seva-cat --jsonl -o cut.jsonl cut.out.mp
expect "pair.json says which side was cut" jq -e -s 'map(."pair.json".truncated) ==
	[{"chosen": false, "rejected": true}, {"chosen": true, "rejected": false}, {"chosen": false, "rejected": false}]' cut.jsonl
expect "--swap swaps the flags with the answers" seva-pair --swap -o cut.swap.mp cut.mp
seva-cat --jsonl -o cut.swap.jsonl cut.swap.mp
expect "the clean answer rejected: its cut flag on the rejected side" jq -e -s '.[1]."pair.json".truncated == {"chosen": false, "rejected": true}' cut.swap.jsonl
expect "--drop-truncated" seva-pair --drop-truncated -o cut.drop.mp cut.mp
stderr_has "dropped and counted" "kept 1, dropped: 0 identical, 0 too short, 2 truncated"
seva-cat --jsonl -o cut.drop.jsonl cut.drop.mp
check "only the pair of two whole answers is left" "$(keys cut.drop.jsonl)" = "t3 "
# L10: the exports are written as the pairs are made, not held: peak memory
# for 2,000 pairs of 4 KB answers is that of 200 (held, it grew by ~16 KB a
# pair, 30 MB here).
many() { # many FILE N: N generated samples whose long answers differ
	$PY -c '
import msgpack, sys
with open(sys.argv[1], "wb") as f:
    for i in range(int(sys.argv[2])):
        a = " ".join("word%d" % ((i * 7 + k) % 997) for k in range(500))
        f.write(msgpack.packb({"__key__": "s%06d" % i, "png": b"\x89PNG" + bytes(64), "json": {"prompt": "Question %d" % i},
            "response.txt": "A red circle. " + a, "aug.response.txt": "A blue square. " + a}))
' "$@"
}
many m200.mp 200
many m2000.mp 2000
rss() { # rss N: peak KB of seva-pair with both exports over mN.mp (under make asan
	# without the quarantine of freed memory, which would count as held)
	ASAN_OPTIONS="${ASAN_OPTIONS:-}:quarantine_size_mb=0" /usr/bin/time -f %M -o rss.$1 seva-pair -q --trl m$1.jsonl --seva m$1.json --images mimg$1 -o /dev/null m$1.mp &&
		cat rss.$1
}
r1=$(rss 200) r2=$(rss 2000)
check "2,000 pairs exported" "$(wc -l <m2000.jsonl)" = 2000
expect "... the SeVa list is JSON" $PY -c 'import json; s = json.load(open("m2000.json")); assert len(s) == 2000 and s[-1]["id"] == "s001999", s[-1]'
check "peak memory flat: ${r2:-?} KB for 2,000 pairs, ${r1:-?} KB for 200" -n "$r1" -a -n "$r2" -a "${r2:-0}" -lt $(( ${r1:-0} + 8192 ))
done_testing
