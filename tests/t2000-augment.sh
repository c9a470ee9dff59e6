#!/bin/bash
# seva-augment: adds aug.png + aug.json and passes the rest through; per-sample
# seeding (shards, threads and order change nothing); bad input; the filter
# basics (empty input, /dev/full, | head).
. "$(dirname "$0")/lib.sh"
PY=/usr/bin/python3

expect "synth input" seva-synth --split unlabeled -n 12 -s 4 -o in.mp

# Default recipe: SeVa's diffusion in normalized space, aug.png a preview.
expect "default recipe" seva-augment -q -o out.mp in.mp
expect "aug.json and aug.png on every sample" $PY -c '
import msgpack, io
from PIL import Image
inp = list(msgpack.Unpacker(open("in.mp", "rb"), raw=False))
out = list(msgpack.Unpacker(open("out.mp", "rb"), raw=False))
assert [r["__key__"] for r in out] == [r["__key__"] for r in inp]
for a, b in zip(inp, out):
    j = b["aug.json"]
    assert j["recipe"] == "diffusion:t=500" and j["seed"] == 0, j
    assert j["space"] == "normalized" and j["preview"] is True and j["base"] == "clean", j
    op = j["ops"][0]
    assert op["op"] == "diffusion" and op["t"] == 500 and op["schedule"] == "sigmoid", op
    assert abs(op["alpha_bar"] - 0.7447985) < 1e-6, op
    assert op["noise"] == {"seed": 0, "key": a["__key__"], "purpose": "diffusion"}, op
    img = [k for k in a if k in ("png", "jpg")][0]
    v = Image.open(io.BytesIO(b["aug.png"]))
    assert v.size == Image.open(io.BytesIO(a[img])).size and v.mode == "RGB"
    for k in a:
        assert b[k] == a[k], k
    assert list(b)[: len(a)] == list(a), "fields keep their order, aug.* appended"
'
expect "strip aug fields" seva-cat -x aug.png,aug.json -o stripped.mp out.mp
same "every other field passes through byte for byte" in.mp stripped.mp

# Per-sample seeding: shards, threads and -s.
expect "split into shards" seva-cat --split part --per 5 -M in.mp
expect "augment shard 0" seva-augment -q -r mocov2 -s 9 -o a0.mp part-000000.msgpack
expect "augment shard 1" seva-augment -q -r mocov2 -s 9 -o a1.mp part-000001.msgpack
expect "augment shard 2" seva-augment -q -r mocov2 -s 9 -o a2.mp part-000002.msgpack
cat a0.mp a1.mp a2.mp >sharded.mp
expect "augment whole, 2 threads" seva-augment -q -r mocov2 -s 9 -j 2 -o whole.mp in.mp
same "sharded run = whole run, byte for byte" sharded.mp whole.mp
expect "augment whole, 1 thread" seva-augment -q -r mocov2 -s 9 -j 1 -o whole1.mp in.mp
same "-j 1 = -j 2" whole.mp whole1.mp
expect "other seed" seva-augment -q -r mocov2 -s 10 -o other.mp in.mp
if cmp -s whole.mp other.mp; then not_ok "-s changes the views"; else ok "-s changes the views"; fi
expect "mocov2 views are 336x336 with recorded parameters" $PY -c '
import msgpack, io
from PIL import Image
for r in msgpack.Unpacker(open("whole.mp", "rb"), raw=False):
    j = r["aug.json"]
    assert j["space"] == "pixel" and j["preview"] is False and "base" not in j
    assert [o["op"] for o in j["ops"]] == ["rrc", "jitter", "gray", "blur", "hflip"], j
    assert len(j["ops"][0]["box"]) == 4
    assert Image.open(io.BytesIO(r["aug.png"])).size == (336, 336)
'

# Pixel-space diffusion is the view itself; pixel ops before normalized
# diffusion leave the un-noised view in aug.base.png.
expect "diffusion in pixel space" seva-augment -q -r diffusion:t=200:space=pixel -o px.mp in.mp
expect "pixel diffusion: no preview" $PY -c '
import msgpack
for r in msgpack.Unpacker(open("px.mp", "rb"), raw=False):
    j = r["aug.json"]
    assert j["space"] == "pixel" and j["preview"] is False and "aug.base.png" not in r, j
'
expect "rrc then normalized diffusion" seva-augment -q -r rrc:size=64,diffusion -o base.mp in.mp
expect "aug.base.png holds the crop" $PY -c '
import msgpack, io
from PIL import Image
for r in msgpack.Unpacker(open("base.mp", "rb"), raw=False):
    assert r["aug.json"]["base"] == "aug.base.png"
    assert Image.open(io.BytesIO(r["aug.base.png"])).size == (64, 64)
'
expect "tar output" seva-augment -q -t -r hflip:p=1 -o out.tar in.mp
tar -tf out.tar >list 2>&1
check "tar lists KEY.aug.png and KEY.aug.json" "$(grep -c -E '^[0-9]+\.aug\.(png|json)$' list)" = 24
expect "reads the tar back" seva-augment -q -r none -o again.mp out.tar
expect "none: PIL reads our PNG as the clean image, pixel for pixel" $PY -c '
import msgpack, io
import numpy as np
from PIL import Image
for r in msgpack.Unpacker(open("again.mp", "rb"), raw=False):
    a = np.asarray(Image.open(io.BytesIO(r["aug.png"])).convert("RGB"))
    b = np.asarray(Image.open(io.BytesIO(r["png"])).convert("RGB"))
    assert (a == b).all(), r["__key__"]
'

# Bad input: each message names the place; -k skips and counts.
$PY -c '
import msgpack, struct, zlib
def chunk(t, d):
    return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d))
big = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 60000, 60000, 8, 2, 0, 0, 0)) \
    + chunk(b"IDAT", zlib.compress(b"\0" * 100)) + chunk(b"IEND", b"")
good = list(msgpack.Unpacker(open("in.mp", "rb"), raw=False))[:2]
recs = [good[0],
        {"__key__": "notimg", "jpg": b"this is not a jpeg", "json": {"prompt": "q"}},
        {"__key__": "huge", "png": big, "json": {"prompt": "q"}},
        {"__key__": "noimg", "json": {"prompt": "q"}},
        good[1]]
with open("bad.mp", "wb") as f:
    for r in recs:
        f.write(msgpack.packb(r, use_bin_type=True))
'
expect_fail "not an image: exit 1" 1 seva-augment -q -o bad-out.mp bad.mp
stderr_has "message names file, record, key and field" "bad\.mp: record 2 \(key notimg\): field 'jpg': cannot decode image: not a JPEG or PNG image"
expect_fail "-k: skips, exit 3" 3 seva-augment -q -k -o kept.mp bad.mp
stderr_has "absurd dimensions refused" "key huge\): field 'png': cannot decode image: image too large: 60000x60000"
stderr_has "no image field named" "key noimg\): no image field"
stderr_has "skips counted" "3 of 5 samples skipped"
expect "kept samples are complete" $PY -c '
import msgpack
r = list(msgpack.Unpacker(open("kept.mp", "rb"), raw=False))
assert len(r) == 2 and all("aug.png" in x for x in r), [x["__key__"] for x in r]
'
head -c 5000 in.mp >trunc.mp
expect_fail "truncated msgpack: exit 1" 1 seva-augment -q -o t.mp trunc.mp
stderr_has "truncated msgpack named" "trunc\.mp"
expect_fail "bad recipe: exit 2" 2 seva-augment -r rrc:scale=2 in.mp
stderr_has "bad recipe named" "recipe 'rrc:scale=2'"
expect_fail "unknown op: exit 2" 2 seva-augment -r sharpen in.mp
expect_fail "NaN in a range: exit 2" 2 seva-augment -r rrc:scale=nan-1 in.mp
stderr_has "... named" "recipe 'rrc:scale=nan-1': rrc: bad value for scale: 'nan-1'"
expect_fail "Inf in a range: exit 2" 2 seva-augment -r blur:sigma=1-inf in.mp
expect_fail "only commas: exit 2" 2 seva-augment -r ,,, in.mp
stderr_has "... an empty op" "recipe ',,,': an empty op"
expect_fail "a trailing comma: exit 2" 2 seva-augment -r hflip, in.mp
expect_fail "two commas between ops: exit 2" 2 seva-augment -r hflip,,gray in.mp
expect_fail "bad seed: exit 2" 2 seva-augment -s -1 in.mp
expect_fail "missing file: exit 1" 1 seva-augment -q nonexistent.mp

# The filter basics.
: >empty
expect "empty input" seva-augment -q -o empty.out empty
check "empty input: no output" ! -s empty.out
expect_fail "/dev/full: exit 1" 1 sh -c 'seva-augment -q in.mp >/dev/full'
bash -c 'seva-augment -r mocov2 in.mp 2>head.err | head -c 100 >/dev/null'
check "| head ends quietly" ! -s head.err

done_testing
