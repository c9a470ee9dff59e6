#!/bin/bash
# Record-layer integrity: gzip shards are verified (CRC-32 and length of
# every member, deflate data, what follows the stream), and JSON is refused
# at the parser when it nests deeper than a msgpack record can hold, instead
# of converting into a stream no tool can read back.
. "$(dirname "$0")/lib.sh"
PY=/usr/bin/python3

expect "a tar shard" seva-synth --split unlabeled -n 4 -t -q -o a.tar
gzip -9 -c a.tar >a.tar.gz
expect "a good .tar.gz" seva-cat -q -o a.mp a.tar.gz
expect "... reads as the tar" seva-cat -q -o a0.mp a.tar
same "... with the same samples" a.mp a0.mp
# Members concatenated (gzip -d reads them as one stream): split inside a
# member's data.
head -c 5000 a.tar | gzip >g.gz
tail -c +5001 a.tar | gzip >>g.gz
expect "two gzip members" seva-cat -q -o g.mp g.gz
same "... the same samples" a.mp g.mp

$PY -c '
d = open("a.tar.gz", "rb").read()
def put(name, b): open(name, "wb").write(bytes(b))
x = bytearray(d); x[-8] ^= 0xff; put("crc.tar.gz", x)            # CRC-32 trailer
x = bytearray(d); x[-2] ^= 0x01; put("len.tar.gz", x)            # ISIZE trailer
x = bytearray(d); x[len(d) // 2] ^= 0x10; put("flip.tar.gz", x)  # a deflate byte
put("garbage.tar.gz", d + b"garbage")
'
for c in crc len flip garbage; do
	expect_fail "$c: exit 1" 1 seva-cat -q -o /dev/null $c.tar.gz
	eval "err_$c=\$(cat \"\$TMP/.err\")"
done
check "bad CRC named" -n "$(echo "$err_crc" | grep 'crc\.tar\.gz: .*gzip: incorrect data check')"
check "bad length named" -n "$(echo "$err_len" | grep 'len\.tar\.gz: .*gzip: incorrect length check')"
check "corrupt deflate data named" -n "$(echo "$err_flip" | grep 'flip\.tar\.gz: .*gzip: ')"
check "data after the stream named" \
	-n "$(echo "$err_garbage" | grep 'garbage\.tar\.gz: after the last record: gzip: data after the compressed stream')"
head -c 3000 a.tar.gz >cut.tar.gz
expect_fail "truncated gzip: exit 1" 1 seva-cat -q -o /dev/null cut.tar.gz
stderr_has "... named" "cut\.tar\.gz: record [0-9]+ .*truncated gzip input"
expect_fail "bad CRC on stdin: exit 1" 1 seva-cat -q -o /dev/null - <crc.tar.gz
stderr_has "... named" "stdin: .*gzip: incorrect data check"
# The CRC is checked even when the trailer comes after the tar's end blocks
# in a read of its own: a big shard, the trailer in the last bytes.
$PY -c '
import io, os, tarfile, zlib, random
b = io.BytesIO()
with tarfile.open(fileobj=b, mode="w", format=tarfile.USTAR_FORMAT) as t:
    for i in range(40):
        d = os.urandom(9000)
        ti = tarfile.TarInfo("%04d.bin" % i); ti.size = len(d); t.addfile(ti, io.BytesIO(d))
c = zlib.compressobj(6, zlib.DEFLATED, 31)
g = bytearray(c.compress(b.getvalue()) + c.flush())
g[-5] ^= 0x40
open("big.tar.gz", "wb").write(g)
'
expect_fail "big shard, bad CRC: exit 1" 1 seva-cat -q -o /dev/null big.tar.gz
stderr_has "... named" "big\.tar\.gz: .*gzip: incorrect data check"

# JSON depth: msgpack-c reads 32 nested containers, the record's map is one.
deep() { # deep FILE DEPTH: a tar with one JSON member nested DEPTH deep
	$PY -c '
import io, sys, tarfile
k = int(sys.argv[2])
d = ("[" * (k - 1) + "{\"a\": 1}" + "]" * (k - 1)).encode()
b = io.BytesIO()
with tarfile.open(fileobj=b, mode="w", format=tarfile.USTAR_FORMAT) as t:
    i = tarfile.TarInfo("k.json"); i.size = len(d); t.addfile(i, io.BytesIO(d))
open(sys.argv[1], "wb").write(b.getvalue())
' "$@"
}
deep d31.tar 31
deep d32.tar 32
deep d40.tar 40
expect "depth 31 converts" seva-cat -q -o d31.mp d31.tar
expect "... and reads back" seva-cat -q -o d31.tar2 -t d31.mp
expect_fail "depth 32: refused at the JSON parser" 1 seva-cat -q -o d32.mp d32.tar
stderr_has "... saying depth" "d32\.tar: record 1 \(key k\): member 'k\.json': JSON nested more than 31 deep"
expect_fail "depth 40: refused" 1 seva-cat -q -o d40.mp d40.tar
stderr_has "... saying depth, not out of memory" "JSON nested more than 31 deep"
printf '{"__key__":"k","json":%s1%s}\n' "$(printf '[%.0s' $(seq 32))" "$(printf ']%.0s' $(seq 32))" >d32.jsonl
expect_fail "JSON lines: a field 32 deep refused" 1 seva-cat -q -o /dev/null d32.jsonl
stderr_has "... saying depth" "d32\.jsonl: record 1: line 1: JSON nested more than 31 deep"
printf '{"__key__":"k","json":%s1%s}\n' "$(printf '[%.0s' $(seq 31))" "$(printf ']%.0s' $(seq 31))" >d31.jsonl
expect "JSON lines: a field 31 deep is read" seva-cat -q -o d31j.mp d31.jsonl
expect "... and reads back from msgpack" seva-cat -q -o /dev/null d31j.mp
# msgpack itself: the record's map and 31 arrays are read; one more, or a
# bomb of 100,000, is "nested more than 32 deep" with where, found in the
# headers before msgpack-c (which said "out of memory") sees the record.
mpdeep() { # mpdeep FILE ARRAYS INNERMOST-HEX
	$PY -c '
import sys
open(sys.argv[1], "wb").write(b"\x82\xa7__key__\xa1k\xa4json" + b"\x91" * int(sys.argv[2]) + bytes.fromhex(sys.argv[3]))
' "$@"
}
mpdeep m31.mp 31 c0
mpdeep m32.mp 32 c0
mpdeep m31e.mp 31 90
mpdeep bomb.mp 100000 c0
expect "msgpack: 32 containers read" seva-cat -q -o m31.jsonl --jsonl m31.mp
check "... all of them" "$(jq -c '.json | flatten' m31.jsonl)" = "[null]"
expect_fail "33 containers: exit 1" 1 seva-cat -q -o /dev/null m32.mp
stderr_has "... named: record, field, offset" "m32\.mp: record 1: field 'json': containers nested more than 32 deep at byte 47 of the record"
expect_fail "an empty array as the 33rd: exit 1" 1 seva-cat -q -o /dev/null m31e.mp
stderr_has "... named" "m31e\.mp: record 1: field 'json': containers nested more than 32 deep at byte 47"
expect_fail "100,000 deep: exit 1" 1 seva-cat -q -o /dev/null bomb.mp
stderr_has "... too deep, not out of memory" "bomb\.mp: record 1: field 'json': containers nested more than 32 deep at byte 47"
cat m31.mp bomb.mp >two.mp
expect_fail "-k: the bomb is a counted skip" 3 seva-cat -k -q -o /dev/null two.mp
stderr_has "... the second record named" "two\.mp: record 2: field 'json': containers nested more than 32 deep.*\(skipped\)"

# seva-cat --llava: image paths that leave --images are refused; paths
# into subfolders (coco/train2017/...) are what LLaVA's lists hold.
mkdir -p imgs/sub
echo SECRET >secret.jpg
cp "$TOP/tests/fixtures/image/photo-420.jpg" imgs/sub/a.jpg
cat >l.json <<JSON
[{"id":"ok","image":"sub/a.jpg","conversations":[{"from":"human","value":"q"}]},
 {"id":"up","image":"../secret.jpg","conversations":[{"from":"human","value":"q"}]},
 {"id":"deep","image":"sub/../../secret.jpg","conversations":[{"from":"human","value":"q"}]},
 {"id":"abs","image":"$TMP/secret.jpg","conversations":[{"from":"human","value":"q"}]},
 {"id":"dots","image":"sub/..a.jpg","conversations":[{"from":"human","value":"q"}]}]
JSON
cp imgs/sub/a.jpg imgs/sub/..a.jpg
expect_fail "--llava: paths out of --images refused (-k: exit 3)" 3 seva-cat -k --llava l.json --images imgs -o l.mp
stderr_has "'..' named" "record 2 \(id up\): image '\.\./secret\.jpg': a '\.\.' component, outside --images"
stderr_has "'..' deeper down named" "record 3 \(id deep\): image 'sub/\.\./\.\./secret\.jpg': a '\.\.' component"
stderr_has "absolute path named" "record 4 \(id abs\): image '[^']*secret\.jpg': an absolute path, outside --images"
expect "... the others read" seva-cat --jsonl -o l.jsonl l.mp
check "... sub/a.jpg and sub/..a.jpg, not the secret" "$(jq -r .__key__ l.jsonl | tr '\n' ' ')" = "ok dots "
done_testing
