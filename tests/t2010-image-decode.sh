#!/bin/bash
# Image decoding of hostile bytes (seva-record(5), IMAGES): JPEG only through
# libjpeg-turbo and PNG only through libpng, each compared with PIL on the
# layouts photos come in; corrupt, truncated and oversized images and other
# formats are located errors (counted skips with -k), never a signal; the
# pixel cap holds after pad-to-square.
. "$(dirname "$0")/lib.sh"
PY=/usr/bin/python3
BAD=$TOP/tests/fixtures/image/bad

# Every layout PIL writes, through seva-augment -r none (aug.png is the
# decoded image, re-encoded losslessly): the pixels of PIL's convert("RGB"),
# except 16-bit grey, whose high byte seva keeps (as PIL does for colour).
$PY - <<'PY'
import io, msgpack
from PIL import Image
base = Image.new("RGB", (37, 23))
base.putdata([((x * 7) % 256, (y * 11) % 256, (x * y) % 256) for y in range(23) for x in range(37)])
def enc(im, fmt, **kw):
    b = io.BytesIO(); im.save(b, fmt, **kw); return b.getvalue()
pal = base.quantize(16)
palt = pal.copy(); palt.info["transparency"] = 3
i16 = Image.frombytes("I;16", (37, 23), bytes((i * 37) % 256 for i in range(37 * 23 * 2)))
cases = {
    "rgb": enc(base, "PNG"), "grey": enc(base.convert("L"), "PNG"),
    "grey-alpha": enc(base.convert("LA"), "PNG"), "rgba": enc(base.convert("RGBA"), "PNG"),
    "palette": enc(pal, "PNG"), "palette-trns": enc(palt, "PNG", transparency=3),
    "1bit": enc(base.convert("1"), "PNG"), "grey16": enc(i16, "PNG"),
    "jpeg-progressive": enc(base, "JPEG", progressive=True, quality=90),
    "jpeg-cmyk": enc(base.convert("CMYK"), "JPEG", quality=95),
    "jpeg-grey": enc(base.convert("L"), "JPEG"),
}
with open("layouts.mp", "wb") as f:
    for k, v in cases.items():
        if v:
            f.write(msgpack.packb({"__key__": k, "png" if not k.startswith("jpeg") else "jpg": v,
                                   "json": {"prompt": "q"}}, use_bin_type=True))
PY
expect "every layout decodes" seva-augment -q -r none -o layouts.out layouts.mp
expect "the pixels are PIL's convert(\"RGB\")" $PY -c '
import io, msgpack
from PIL import Image
bad = []
for r in msgpack.Unpacker(open("layouts.out", "rb"), raw=False):
    src = r.get("png") or r.get("jpg")
    want = Image.open(io.BytesIO(src))
    if want.mode.startswith("I"):   # 16-bit grey: PIL clips to 255; seva keeps the high byte
        want = Image.frombytes("L", want.size, bytes(v >> 8 for v in want.getdata()))
    want = want.convert("RGB")
    got = Image.open(io.BytesIO(r["aug.png"])).convert("RGB")
    d = max(abs(a - b) for p, q in zip(want.getdata(), got.getdata()) for a, b in zip(p, q))
    if got.size != want.size or d > 0:
        bad.append("%s: size %s vs %s, max diff %d" % (r["__key__"], got.size, want.size, d))
assert not bad, bad
'

# The stream that killed seva-augment -k with SIGSEGV when JPEGs libjpeg
# refused went to a second decoder: 26 broken JPEGs.
expect_fail "26 broken JPEGs: exit 1" 1 seva-augment -q -j 1 -r none -o j.out "$BAD/jpegs-26.msgpack"
stderr_has "the first names file, record, key and field" \
	"jpegs-26\.msgpack: record 1 \(key s000016\): field 'jpg': cannot decode image: unsupported format 'hdr'"
expect_fail "-k: every one a counted skip, no signal (exit 3)" 3 \
	seva-augment -q -k -j 1 -r none -o j.out "$BAD/jpegs-26.msgpack"
stderr_has "skips counted" "26 of 26 samples skipped"
check "one located error each" \
	"$(grep -Ec "record [0-9]+ \(key [cs]0+[0-9]+\): field 'jpg': cannot decode image: (JPEG: |PNG: |unsupported format|not a JPEG)" "$TMP/.err")" = 26
check "the four copies of the 842-byte one refused by libjpeg" \
	"$(grep -Ec "\(key c0+[0-9]+\): field 'jpg': cannot decode image: JPEG: " "$TMP/.err")" = 4
expect_fail "the same with 2 threads" 3 seva-augment -q -k -j 2 -r none -o j.out "$BAD/jpegs-26.msgpack"
stderr_has "skips counted with 2 threads" "26 of 26 samples skipped"
$PY -c '
import msgpack, sys
for f in sys.argv[1:]:
    sys.stdout.buffer.write(msgpack.packb({"__key__": f.split("/")[-1].split(".")[0], "jpg": open(f, "rb").read(),
                                           "json": {"prompt": "Describe the image."}}, use_bin_type=True))
' "$BAD/huffman.jpg" "$BAD/build-huffman.jpg" >two.mp
expect_fail "seva-generate: the same JPEGs are counted skips (exit 3)" 3 seva-generate -q -k -m "$TOP/pipelines/base" -o g.out two.mp
stderr_has "seva-generate names the field" "\(key huffman\): field 'jpg': cannot decode image: JPEG: "

# Corrupt PNGs: a chunk CRC (PIL refuses it), cut pixel data, no IEND.
seva-synth --split unlabeled -n 1 -q -o one.mp
$PY -c '
import msgpack
r = msgpack.unpackb(open("one.mp", "rb").read(), raw=False)
p = r["png"]
def put(key, data):
    return msgpack.packb(dict(r, __key__=key, png=bytes(data)), use_bin_type=True)
crc = bytearray(p); crc[29] ^= 0xff
idat = p.index(b"IDAT")
flip = bytearray(p); flip[idat + 40] ^= 0x55
open("badpng.mp", "wb").write(put("crc", crc) + put("cut", p[: idat + 60]) + put("noiend", p[:-12])
                              + put("flip", flip))
'
expect_fail "corrupt PNGs: counted skips, exit 3" 3 seva-augment -q -k -o p.out badpng.mp
stderr_has "IHDR CRC" "\(key crc\): field 'png': cannot decode image: PNG: IHDR: CRC error"
stderr_has "cut pixel data" "\(key cut\): field 'png': cannot decode image: PNG: "
stderr_has "no IEND" "\(key noiend\): field 'png': cannot decode image: PNG: "
stderr_has "a flipped byte in IDAT" "\(key flip\): field 'png': cannot decode image: PNG: "
stderr_has "all four skipped" "4 of 4 samples skipped"

# Other formats, by name.
$PY -c '
import io, msgpack
from PIL import Image
im = Image.new("RGB", (8, 8), (200, 10, 10))
out = b""
for fmt, field in (("GIF", "gif"), ("BMP", "bmp"), ("TGA", "tga"), ("PPM", "ppm")):
    b = io.BytesIO(); im.save(b, fmt)
    out += msgpack.packb({"__key__": field, field: b.getvalue(), "json": {"prompt": "q"}}, use_bin_type=True)
open("formats.mp", "wb").write(out)
'
expect_fail "other formats: counted skips, exit 3" 3 seva-augment -q -k -o f.out formats.mp
stderr_has "gif by name" "\(key gif\): field 'gif': cannot decode image: unsupported format 'gif'"
stderr_has "bmp by name" "\(key bmp\): field 'bmp': cannot decode image: unsupported format 'bmp'"
stderr_has "ppm by name" "\(key ppm\): field 'ppm': cannot decode image: unsupported format 'pnm'"
stderr_has "tga has no signature" "\(key tga\): field 'tga': cannot decode image: not a JPEG or PNG image"

# The pixel cap after pad-to-square: 270 bytes, 65535x1, would be a 12.9 GB
# square. Refused before it is made (2 GB of address space is plenty for
# everything else).
$PY -c '
import struct, zlib, msgpack, sys
c = lambda t, d: struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d))
w = 65535
p = b"\x89PNG\r\n\x1a\n" + c(b"IHDR", struct.pack(">IIBBBBB", w, 1, 8, 2, 0, 0, 0)) \
    + c(b"IDAT", zlib.compress(bytes(1 + 3 * w), 9)) + c(b"IEND", b"")
assert len(p) == 270, len(p)
sys.stdout.buffer.write(msgpack.packb({"__key__": "w", "png": p, "json": {"prompt": "Describe the image."}},
                                      use_bin_type=True))
' >wide.mp
expect_fail "65535x1 through seva-generate: exit 1" 1 \
	memcap 2000000 seva-generate -q -m "$TOP/pipelines/base" -o w.out wide.mp
stderr_has "the padded size and the limit named" \
	"wide\.mp: record 1 \(key w\): field 'png': image 65535x1 padded to a square is 65535x65535, over the 67108864-pixel limit"
done_testing
