#!/bin/bash
# The malformed cases of the reliability, ecosystem and aesthetics reviews,
# one or more checks per finding (named by its id), each the review's own
# reproduction: a located error and exit 1, a counted skip (exit 3) under
# -k, a usage error (exit 2) naming the option, and nothing written outside
# the output. Other tests go deeper into each; this one is the list. Under
# make asan the same commands run with the sanitizers, which report into
# the build's reports/ folder.
. "$(dirname "$0")/lib.sh"
PY=/usr/bin/python3
BASE=$TOP/pipelines/base
FIX=$TOP/tests/fixtures

seva-synth --split unlabeled -n 4 -q | seva-augment -q | seva-generate -q -m "$BASE" -o gen.mp
seva-pair -q -o p.mp gen.mp
edit() { # edit IN OUT PYTHON: each record r of IN through PYTHON (i: its index) into OUT
	$PY -c '
import msgpack, sys
out = open(sys.argv[2], "wb")
for i, r in enumerate(msgpack.Unpacker(open(sys.argv[1], "rb"), raw=False)):
    exec(sys.argv[3])
    out.write(msgpack.packb(r, use_bin_type=True))
' "$@"
}
one() { # one FILE FIELD B64FILE: a sample holding the image in B64FILE as FIELD
	$PY -c '
import base64, msgpack, sys
d = base64.b64decode(open(sys.argv[3]).read())
open(sys.argv[1], "wb").write(msgpack.packb({"__key__": "c", sys.argv[2]: d, "json": {"prompt": "x"}}, use_bin_type=True))
' "$@"
}

# H1: a key used as a file name cannot leave the export folder
edit gen.mp trav.mp 'r["__key__"] = "../../evil%d" % i'
expect_fail "H1 seva-pair --images with key ../../evil0: exit 1" 1 \
	seva-pair -q --trl t.jsonl --images out/imgs -o /dev/null trav.mp
stderr_has "H1 ... the key named" "trav\.mp: record 1 \(key \.\./\.\./evil0\): __key__ holds '/' or '\.'"
check "H1 ... nothing written outside" -z "$(find . -name 'evil*')"
expect_fail "H1 -k: every such key a counted skip" 3 \
	seva-pair -q -k --trl t.jsonl --images out/imgs -o /dev/null trav.mp
check "H1 ... still nothing outside" -z "$(find . -name 'evil*')"

# H2: JPEGs libjpeg refuses are errors, not a second chance for stb_image
cat >b1.b64 <<'EOF'
/9j/4AAQSkZJRgABAQAAAQABAAAAAAAAAAD/2wBDAAgGBgcGBQgHBwcJCQgKDBQNDAsLDBkSEw8UHRofHh0aHBwgJC4nICIsIxwc
KDcpLDAxNDQ0Hyc5PTgyPC4zNDL/2wBDAQkJCQwLDBgNDRgyIRwhMjIyMjIyMjIyMjIyMjIyMjIyMjIyMjIyMjIyMjIyMjIyMjIy
MjIyMjIyMjIyMjIyMjL/wgARCAAMABADASIAAhEBAxEB/8QAFgABAQEAAAAAAAAAAAAAAAAAAAME/8QAFQEBAQAAAAAAAAAAAAAA
AAAAAAL/2gAMAwEAAhADEAAAASGxX//kABgAAwEBEAAAAAAAAAAAAAAAAAECAxET/9oACAEBAAEFAs5htRpk1crkf//EABcRAQAD
AAAAAAAAAAAAAAAAAAECAxET/9oACAEBAAEFAs5htRpk1crkf//EABcRAQADAAAAAAAAAAAAAAAAAAEAAjD/2gAIAwMBAf/Y/+AA
MDE0NDQfJzk9ODI8LjM0Mv/bAEMBCQkJDAsMGA0NGDIhHCEyMjIyMjIyMjIyMjIyMjIyMjIyMjIyMjIyMjIyMjIyMjIyMjIyMjIy
MjIyMjIyMjIyMv/CABEIAAwAEAMBIgACEQEDEQH/xAAWAAEBAQAAAAAAAAAAAAAAAAAAAwT/xAAVAQEBAAAAAAAAAAAAAAAAAAAA
Av/aAAwDAQACEAMQAAABIbFf/8QAGBAAAwEBAAAAAAAAAAAAAAAAAQIDERP/2gAIAQEAAQUCzmG1GmTVyuR//8QAFxEBAAMAAAAA
AAAAAAAAAAAAAQACMf/aAAgBAwEBPwG47P/EABcRAQADAAAAAAAAAAAAAAAAAAEAEiH/2gAIAQIBAT8B2wT/xAAgEAABAgYDAQAA
AAAAAAAAAAABAAIREiExUYEDImLx/9oACD8BuOz/xAAXEQEAAwAAAAAAAAAAAAAAAAA3AQASIf/aAAgBAgERAQADAAAAAAABAAEB
AAY/AqO7Y+7VyWtoMxyuQm4IU3uWG1//xAAdEAACAgIDAAAAAQAAAAAAAAABEQAhYXExQVGh/9oACAEBAAE/IaoAhNCHiumg51Gw
TFFEia8dF7wSIZiQwP/aAAA=
EOF
cat >b3.b64 <<'EOF'
/9j/4AAQSkZJRgABAQAAAQABAAAjP1JBRElBTkNFAAgGBgcGBQgHBwcJCQgKDBQNDAsLDBkSEw8UHRofHh0aHBwgJC4nICIsIxwc
KDcpLDAxNDQ0Hyc5PTgyPC4zNDL/2wBDAQkJCQwLDBgNDRgyIRwhMjIyMjIyMjIyMjIyMjIyMjIyMjIyMjIyMjIyMjIyMjIyMjIy
MjIyMjIyMjIyMjIyMjL/wgARCAAMABADASIAAhEBAxEB/8QAFgABAQEAAAAAAAAAAAAAAAAAAAME/8QAFQEBAQAAAAAAAAAAAAAA
AAAAAAL/2gAMAwEAAhADEAAAASGxXybEABgQAAMHAQAAAAAAAAAAAAAAAAECAxET/9oACAEBAAEFAs5htRpk1crkf//EABcRAQAD
AAAAAAAAAAAAAAAAAAEAAjL/2gAIAQMBAT8BuOz/xAAXEQEAAwAAAAAAAABD/////////wMIBwcHCQkICgwUDQwLCwwZEhMPFB0a
Hx4dGhwcICQuJyAiLCMcHCg3KSwwMTQ0NB8nOT04MjwuMzQy/9sAQwEJCQkMCwwYDQ0YMiEcITIyMjIyMjIyMjIyMjIyMjIyMjIy
MjIyMjIyMjIyMjIyMjIyMjIyMjIyMjIyMjIyMjIy/8IAEQgADAAQAwEiAAIRAQMRAf/EABYAAQEBAAAAAAAAAAAAAAAAAAADBP/E
ABUBAQEAAAAAAAAAAAAAAAAAAAAC/9oADAMBAAIQAxAAAAEhsV8mxAAYEAADBwEAAAAAAAAAAAAAAAABAgMAAABnAAAohhGAABDn
/9k=
EOF
one b1.mp jpg b1.b64
one b3.mp jpg b3.b64
expect_fail "H2 B.1 JPEG through seva-augment: exit 1" 1 seva-augment -q -j 1 -r none -o /dev/null b1.mp
stderr_has "H2 ... libjpeg's reason, located" "b1\.mp: record 1 \(key c\): field 'jpg': cannot decode image: JPEG: "
expect_fail "H2 ... with -k: a counted skip" 3 seva-augment -q -k -j 1 -r none -o /dev/null b1.mp
expect_fail "H2 B.1 through seva-generate: exit 1" 1 seva-generate -q -m "$BASE" -o /dev/null b1.mp
stderr_has "H2 ... the same words" "b1\.mp: record 1 \(key c\): field 'jpg': cannot decode image: JPEG: "
expect_fail "H2 B.3 JPEG (stb's out-of-bounds Huffman write): exit 1" 1 seva-augment -q -j 1 -r none -o /dev/null b3.mp
stderr_has "H2 ... located" "b3\.mp: record 1 \(key c\): field 'jpg': cannot decode image: JPEG: "

# M1: the pixel cap after pad-to-square
$PY -c '
import msgpack, struct, sys, zlib
c = lambda t, d: struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d))
w = 65535
p = b"\x89PNG\r\n\x1a\n" + c(b"IHDR", struct.pack(">IIBBBBB", w, 1, 8, 2, 0, 0, 0)) + c(b"IDAT", zlib.compress(bytes(1 + 3 * w), 9)) + c(b"IEND", b"")
open("wide.mp", "wb").write(msgpack.packb({"__key__": "w", "png": p, "json": {"prompt": "Describe the image."}}, use_bin_type=True))
'
expect_fail "M1 a 270-byte 65535x1 PNG in 2 GB: exit 1" 1 memcap 2000000 seva-generate -q -m "$BASE" -o /dev/null wide.mp
stderr_has "M1 ... the padded size named" "wide\.mp: record 1 \(key w\): field 'png': image 65535x1 padded to a square is 65535x65535, over the 67108864-pixel limit"

# M2
printf ',\n' >v.txt
expect_fail "M2 seva-eval --vocab, a line of commas: exit 1" 1 seva-eval --vocab v.txt /dev/null
stderr_has "M2 ... file and line" "v\.txt: line 1: no object name before ','"

# M3: trainer.bin, the review's byte patches (the checksum) and the field behind a valid one
seva-synth --tokenizer >tok.json
seva-sft --config "$FIX/train/tiny-config.json" --tokenizer tok.json \
	--preprocessor "$FIX/train/tiny-preprocessor.json" -s 3 --init-only -o tiny 2>/dev/null
seva-synth --split sft -n 6 -q -o s.mp
T="seva-sft -j 1 -q -m tiny -b 2 --max-steps 30"
expect "M3 a checkpoint of step 5" $T --save-every 5 --stop-after 5 -o ck s.mp
cp ck.ckpt/trainer.bin good.bin
patch() { # patch FORMAT OFFSET VALUE [sum]: good.bin with one field changed (sum: checksum redone)
	$PY -c '
import hashlib, struct, sys
d = bytearray(open("good.bin", "rb").read())
struct.pack_into(sys.argv[1], d, int(sys.argv[2]), int(sys.argv[3]))
if len(sys.argv) > 4:
    d[-32:] = hashlib.sha256(d[:-32]).digest()
open("ck.ckpt/trainer.bin", "wb").write(d)
' "$@"
}
patch "<q" 64 -100000
expect_fail "M3 pos = -100000: refused" 1 $T --resume -o ck s.mp
stderr_has "M3 ... the checksum named" "ck\.ckpt/trainer\.bin: corrupt checkpoint: its SHA-256 does not match its contents"
patch "<q" 64 -100000 sum
expect_fail "M3 ... and with its checksum redone" 1 $T --resume -o ck s.mp
stderr_has "M3 ... the position named" "ck\.ckpt/trainer\.bin: corrupt checkpoint: position -100000"
patch "<q" 48 -5 sum
expect_fail "M3 step = -5 (a negative learning rate): refused" 1 $T --resume -o ck s.mp
stderr_has "M3 ... the step named" "corrupt checkpoint: step -5 not in"

# M4: an unwritable -o before the first step
expect_fail "M4 seva-dpo -o /proc/...: exit 1" 1 seva-dpo -q -m "$BASE" -o /proc/seva-out --max-steps 60 -b 2 --metrics m4.jsonl p.mp
stderr_has "M4 ... the directory named" "mkdir '/proc/seva-out\.tmp\.[0-9]+': No such file or directory"
check "M4 ... before any step" ! -s m4.jsonl

# M5: gzip shards verified
seva-synth --split unlabeled -n 4 -t -q | gzip >a.tar.gz
$PY -c 'd = bytearray(open("a.tar.gz", "rb").read()); d[-8] ^= 0xff; open("b.tar.gz", "wb").write(d)'
$PY -c 'd = bytearray(open("a.tar.gz", "rb").read()); d[len(d) // 2] ^= 0x55; open("c.tar.gz", "wb").write(d)'
expect_fail "M5 a wrong CRC-32: exit 1" 1 seva-cat -q -o /dev/null b.tar.gz
stderr_has "M5 ... located" "b\.tar\.gz: record [0-9]+ \(key [0-9]+\): member '[^']*': gzip: incorrect data check"
expect_fail "M5 a flipped deflate byte: exit 1" 1 seva-cat -q -o /dev/null c.tar.gz
stderr_has "M5 ... located" "c\.tar\.gz: .*gzip: "

# M6: a clean error leaves no temporary (a killed run's are reclaimed: t8100)
expect_fail "M6 --init-only with a bad tokenizer: exit 1" 1 \
	seva-sft --config "$BASE/config.json" --tokenizer "$TOP/README.md" --init-only -o rnd
stderr_has "M6 ... named" "README\.md: not valid JSON"
check "M6 ... no rnd.init.tmp.PID" -z "$(ls -d rnd* 2>/dev/null)"

# M7
$PY -c '
import json, sys
t = json.load(open(sys.argv[1]))
t["added_tokens"].append({"id": 1000000000, "content": "<big>", "special": True})
json.dump(t, open("tok-big.json", "w"))
' "$BASE/tokenizer.json"
echo '"a circle"' >q.jsonl
expect_fail "M7 an added id of 10^9 in 300 MB: exit 1" 1 memcap 300000 seva-tok tok-big.json q.jsonl
stderr_has "M7 ... the key named" "tok-big\.json: added_tokens\[[0-9]+\]\.id: 1000000000 over 4194303"

# L1, L13: depth
$PY -c '
import io, tarfile
d = b"{\"a\":" + b"[" * 40 + b"]" * 40 + b"}"
b = io.BytesIO()
with tarfile.open(fileobj=b, mode="w", format=tarfile.USTAR_FORMAT) as t:
    i = tarfile.TarInfo("k.json"); i.size = len(d); t.addfile(i, io.BytesIO(d))
open("deep.tar", "wb").write(b.getvalue())
d = b"\x82\xa7__key__\xa1k\xa4json" + b"\x91" * 100000 + b"\xc0"
open("deep.mp", "wb").write(d)
'
expect_fail "L1 JSON 41 deep in a tar: refused at conversion" 1 seva-cat -q -o /dev/null deep.tar
stderr_has "L1 ... saying depth" "deep\.tar: record 1 \(key k\): member 'k\.json': JSON nested more than 31 deep"
expect_fail "L13 msgpack 100,000 deep: exit 1" 1 seva-cat -q -o /dev/null deep.mp
stderr_has "L13 ... too deep, with where (not out of memory)" "deep\.mp: record 1: field 'json': containers nested more than 32 deep at byte 47"

# L2, R1: keys unique
mkdir -p photos
seva-synth --split unlabeled -n 2 -t -q -o ph.tar
(cd photos && tar xf ../ph.tar)
cat >col.json <<'EOF'
[{"id": "vg/123", "image": "000000.png", "conversations": [{"from": "human", "value": "<image>\nq"}]},
 {"id": "vg_123", "image": "000001.png", "conversations": [{"from": "human", "value": "<image>\nq2"}]}]
EOF
sed 's/"vg\/123"/"a"/; s/"vg_123"/"a"/' col.json >dup.json
expect_fail "R1 --llava ids colliding after sanitising: exit 1" 1 seva-cat --llava col.json --images photos -t -o col.tar
stderr_has "R1 ... both named" "col\.json: record 2 \(id vg_123\): key 'vg_123' already used by record 1"
check "R1 ... no tar" ! -e col.tar
expect_fail "R1 duplicate ids: exit 1" 1 seva-cat --llava dup.json --images photos -t -o dup.tar
stderr_has "R1 ... named" "dup\.json: record 2 \(id a\): key 'a' already used by record 1"
expect_fail "R1 -k: the second a counted skip" 3 seva-cat -k --llava dup.json --images photos -t -o dup.tar
expect "R1 ... the tar reads back" seva-cat -q -o /dev/null dup.tar
edit gen.mp same.mp 'r["__key__"] = "same"'
expect_fail "L2 a key repeated in msgpack, into --images: exit 1" 1 \
	seva-pair -q --trl sd.jsonl --images sdimg -o /dev/null same.mp
stderr_has "L2 ... both records named" "same\.mp: record 2 \(key same\): key already used by record 1"

# L3
edit p.mp pnil.mp 'r["chosen.txt"] = None'
expect_fail "L3 chosen.txt nil into --score: exit 1" 1 seva-dpo --score -q -m "$BASE" -o /dev/null pnil.mp
stderr_has "L3 ... the field named" "pnil\.mp: record 1 \(key [^)]*\): field 'chosen\.txt': wrong type \(want text\)"

# L4
mkdir -p nanm
cp "$BASE"/*.json nanm/
$PY -c '
import struct, sys
d = open(sys.argv[1], "rb").read()
n = struct.unpack("<Q", d[:8])[0]
open("nanm/model.safetensors", "wb").write(d[:8 + n] + b"\xc0\x7f" * ((len(d) - 8 - n) // 2))
' "$BASE/model.safetensors"
seva-synth --split bench -n 1 -q -o bench.mp
expect_fail "L4 NaN weights through seva-generate: exit 1" 1 seva-generate -q -m nanm --views clean -o /dev/null bench.mp
stderr_has "L4 ... the sample and the model named" "the clean view's log-probs are not finite \(NaN or Inf in the model 'nanm'\?\)"

# L5
expect_fail "L5 -b 65536 --accum 65536: usage error" 2 seva-sft -q -m tiny -o o14 -b 65536 --accum 65536 --max-steps 1 s.mp
stderr_has "L5 ... the product and its bound" "-b 65536 x --accum 65536 = 4294967296 examples a step: at most"

# L6
seva-synth --split unlabeled -n 1 -q -o one.mp
edit one.mp badcrc.mp 'p = bytearray(r["png"]); p[29] ^= 0xff; r["png"] = bytes(p)'
expect_fail "L6 a PNG whose IHDR CRC is wrong: exit 1" 1 seva-augment -q -o /dev/null badcrc.mp
stderr_has "L6 ... located" "badcrc\.mp: record 1 \(key [^)]*\): field 'png': cannot decode image: PNG: IHDR: CRC error"

# L7
mkdir -p ovl
cp "$BASE"/*.json ovl/
$PY -c '
import json, struct, sys
d = open(sys.argv[1], "rb").read()
n = struct.unpack("<Q", d[:8])[0]
h = json.loads(d[8:8 + n])
for k, v in h.items():
    if k != "__metadata__":
        v["data_offsets"] = [0, v["data_offsets"][1] - v["data_offsets"][0]]
hb = json.dumps(h).encode()
hb += b" " * (-len(hb) % 8)
open("ovl/model.safetensors", "wb").write(struct.pack("<Q", len(hb)) + hb + d[8 + n:])
' "$BASE/model.safetensors"
expect_fail "L7 overlapping safetensors offsets: exit 1" 1 seva-generate -q -m ovl --views clean -o /dev/null bench.mp
stderr_has "L7 ... the tensor named" "ovl/model\.safetensors: tensor '[^']*': data_offsets \[0, [0-9]+\] overlap the tensor before"
$PY -c '
import json, sys
t = json.load(open(sys.argv[1]))
t["post_processor"]["cls"] = ["<s>", 632]
json.dump(t, open("tokcls.json", "w"))
' "$FIX/tok/bytelevel.json"
echo '"hello"' >hello.jsonl
expect_fail "L7 a post-processor id beyond the vocabulary: exit 1" 1 seva-tok --bos tokcls.json hello.jsonl
stderr_has "L7 ... at load, file and key named" "tokcls\.json: post_processor: cls: id 632 is not in the vocabulary \(319 ids\)"

# L8
seva-augment -q -o aug.mp one.mp
edit aug.mp warp.mp 'r["aug.json"]["ops"] = [{"op": "warp"}]'
expect_fail "L8 aug.json with an unknown op: exit 1" 1 seva-generate -q -m "$BASE" -o /dev/null warp.mp
stderr_has "L8 ... the op named" "aug\.json: op 1: unknown op 'warp'"

# L9
expect_fail "L9 -r rrc:scale=nan-1: usage error" 2 seva-augment -q -r rrc:scale=nan-1 -o /dev/null one.mp
stderr_has "L9 ... the key named" "recipe 'rrc:scale=nan-1': rrc: bad value for scale: 'nan-1'"
expect_fail "L9 -r ,,,: usage error" 2 seva-augment -q -r ,,, -o /dev/null one.mp
stderr_has "L9 ... an empty op" "recipe ',,,': an empty op"

# L10 (memory of the exports) is t5000's; L11
echo '{"samples":"x","pope":5}' >g.json
expect_fail "L11 --compare of malformed metrics: exit 1" 1 seva-eval --compare g.json g.json
stderr_has "L11 ... the file named" "g\.json: no \"per_sample\" array"

# L12
mkdir -p imgs
echo SECRET >secret.jpg
echo '[{"id":"x","image":"../secret.jpg","conversations":[{"from":"human","value":"q"}]}]' >l2.json
expect_fail "L12 --llava image '../secret.jpg': exit 1" 1 seva-cat --llava l2.json --images imgs --jsonl --base64 -o l12.jsonl
stderr_has "L12 ... refused, named" "l2\.json: record 1 \(id x\): image '\.\./secret\.jpg': a '\.\.' component, outside --images"
check "L12 ... the secret not read" ! -s l12.jsonl

# L13: usage errors name the option
expect_fail "L13 --top-p 0: usage error" 2 seva-generate -m "$BASE" --top-p 0 /dev/null
stderr_has "L13 ... the option and its range" "--top-p: not a number in \(0, 1\]: '0'"
expect_fail "L13 seva-pair --images alone: usage error" 2 seva-pair --images imgs /dev/null
stderr_has "L13 ... saying what it needs" "--images writes the images that --trl and --seva name: give one of them"
expect_fail "L13 seva-eval --compare of one file: usage error" 2 seva-eval --compare g.json
stderr_has "L13 ... saying what it takes" "--compare takes a base and 1 to 1000 runs"
expect_fail "L13 seva-cat --split with -o: usage error" 2 seva-cat --split sh -o x.mp /dev/null
stderr_has "L13 ... naming both" "--split writes PREFIX-NNNNNN files: -o is not for it"
expect_fail "L13 a bad image without -k: exit 1" 1 seva-augment -q -j 1 -r none -o /dev/null b1.mp
if grep -q "skipped" "$TMP/.err"; then not_ok "L13 ... no 'skipped' when nothing was"; diag <"$TMP/.err"
else ok "L13 ... no 'skipped' when nothing was"; fi
expect_fail "L13 seva-generate, the same image" 1 seva-generate -q -m "$BASE" -o /dev/null b1.mp
if grep -q "cannot decode image: cannot decode image" "$TMP/.err"; then not_ok "L13 ... the reason once"; diag <"$TMP/.err"
else ok "L13 ... the reason once"; fi

edit p.mp lp.mp 'r["prompt.txt"] = "describe " * 400 if i == 0 else r["prompt.txt"]'
expect "L13 seva-dpo: a pair whose prompt alone overflows the context" seva-dpo -q -m "$BASE" -o lp --max-steps 1 lp.mp
stderr_has "L13 ... skipped and counted in those words" "1 pairs skipped: the prompt alone fills the model's context"
if grep -q -- "--skip-long" "$TMP/.err"; then not_ok "L13 ... not called --skip-long's, which was not given"; diag <"$TMP/.err"
else ok "L13 ... not called --skip-long's, which was not given"; fi

# L15
check "L15 seva-pair(1): -s renders as a sentence" \
	"$(mandoc -Tascii "$TOP/man/seva-pair.1" | col -b | grep -A1 'Seed for' | tr -s ' \n' ' ')" != "" -a \
	-z "$(mandoc -Tascii "$TOP/man/seva-pair.1" | col -b | grep -A1 'Seed for' | grep -e '-0 -to')"

# R2
expect_fail "R2 --trl without --images: usage error" 2 seva-pair -q --trl p.jsonl -o /dev/null gen.mp
stderr_has "R2 ... naming --images" "--trl names each pair's image file: give --images DIR"
check "R2 ... no export pointing at nothing" ! -e p.jsonl

# R7
seva-dpo --score -q -m "$BASE" -o scored.mp p.mp
mkdir -p other
cp "$BASE"/* other/
$PY -c 'd = bytearray(open("other/model.safetensors", "rb").read()); d[-3] ^= 1; open("other/model.safetensors", "wb").write(d)'
expect_fail "R7 ref.json of another model: exit 1" 1 seva-dpo -q -m other -o r7 --max-steps 1 scored.mp
stderr_has "R7 ... both models named" "ref\.json was scored by '[^']*' \(model_id [0-9a-f]+\), the reference of this run is [0-9a-f]+"

# aesthetics §3.4: the copies that drifted
mkdir -p nobos
cp "$BASE"/* nobos/
echo '{"add_bos_token": false}' >nobos/tokenizer_config.json
echo '"Is there a red circle?"' >red.jsonl
seva-tok --template "$BASE" --ids red.jsonl >shipped.ids
seva-tok --template nobos --ids red.jsonl >nobos.ids
check "§3.4 seva-tok --template: add_bos_token false leaves BOS out" "$(jq -c '.[1:]' shipped.ids)" = "$(cat nobos.ids)"
cat >user.json <<'EOF'
[{"id": "u1", "image": "000000.png", "conversations": [{"from": "user", "value": "<image>\nWhat colour?"}, {"from": "assistant", "value": "Red."}]}]
EOF
expect "§3.4 seva-cat --llava: a \"user\" turn asks" seva-cat --llava user.json --images photos --jsonl -o user.jsonl
check "§3.4 ... the question, <image> removed" "$(jq -r .json.prompt user.jsonl)" = "What colour?"
$PY -c '
import msgpack
open("notimg.mp", "wb").write(msgpack.packb({"__key__": "k1", "png": b"not an image", "json": {"prompt": "q"}}, use_bin_type=True))
'
expect_fail "§3.4 one bad image: seva-augment" 1 seva-augment -q -o /dev/null notimg.mp
a=$(grep -o "record 1 (key k1).*" "$TMP/.err")
expect_fail "§3.4 ... seva-generate" 1 seva-generate -q -m "$BASE" -o /dev/null notimg.mp
g=$(grep -o "record 1 (key k1).*" "$TMP/.err")
check "§3.4 ... in the same words ('$a')" -n "$a" -a "$a" = "$g"
done_testing
