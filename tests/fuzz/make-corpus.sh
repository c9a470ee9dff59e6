#!/bin/sh
# make-corpus.sh — small seed inputs for the fuzz harnesses: msgpack records
# with every field type, tar shards (plain, with a directory, a pax name),
# JSON lines; images in every layout PIL writes; safetensors files; model
# directories' JSON; tokenizers.
set -e
cd "$(dirname "$0")"
TOP=../..
rm -rf corpus-msgpack corpus-tar corpus-image corpus-safetensors corpus-config corpus-tokenizer
mkdir -p corpus-msgpack corpus-tar corpus-image corpus-safetensors corpus-config corpus-tokenizer
/usr/bin/python3 - <<'PY'
import io, json, msgpack, tarfile
recs = [
    {"__key__": "000001", "jpg": b"\xff\xd8\xff" + bytes(40), "json": {"prompt": "Is there a cat?", "n": 3, "f": 0.5,
     "l": [1, -2, None, True, {"a": "\u00e9"}]}, "response.txt": "Yes.</s>"},
    {"__key__": "k", "aug.json": {"ops": [{"op": "diffusion", "t": 500}], "seed": 18446744073709551615}, "txt": ""},
]
for i, r in enumerate(recs):
    open("corpus-msgpack/rec%d" % i, "wb").write(msgpack.packb(r, use_bin_type=True))
open("corpus-msgpack/both", "wb").write(b"".join(msgpack.packb(r, use_bin_type=True) for r in recs))
open("corpus-msgpack/jsonl", "w").write('{"__key__":"a","txt":"x","png":{"base64":"AAEC"},"json":{"a":[1,2.5]}}\n')
def tar(name, members, fmt=tarfile.USTAR_FORMAT):
    b = io.BytesIO()
    with tarfile.open(fileobj=b, mode="w", format=fmt) as t:
        for n, d in members:
            ti = tarfile.TarInfo(n); ti.size = len(d); t.addfile(ti, io.BytesIO(d))
    open("corpus-tar/" + name, "wb").write(b.getvalue())
tar("plain", [("1.txt", b"hi"), ("1.json", b'{"prompt":"q"}'), ("2.png", b"\x89PNG")])
tar("dir", [("d/1.txt", b"hi"), ("d/1.aug.json", b'{"a":1}')])
tar("pax", [("x" * 120 + ".txt", b"long"), ("k.txt", b"v")], tarfile.PAX_FORMAT)
PY

/usr/bin/python3 - <<'PY'
import io, json, struct
from PIL import Image
base = Image.new("RGB", (19, 11))
base.putdata([((x * 13) % 256, (y * 23) % 256, (x * y * 7) % 256) for y in range(11) for x in range(19)])
def save(name, im, fmt, **kw):
    b = io.BytesIO(); im.save(b, fmt, **kw); open("corpus-image/" + name, "wb").write(b.getvalue())
save("rgb.png", base, "PNG"); save("grey.png", base.convert("L"), "PNG")
save("rgba.png", base.convert("RGBA"), "PNG"); save("pal.png", base.quantize(8), "PNG")
save("1bit.png", base.convert("1"), "PNG"); save("la.png", base.convert("LA"), "PNG")
save("base.jpg", base, "JPEG", quality=80); save("prog.jpg", base, "JPEG", progressive=True)
save("grey.jpg", base.convert("L"), "JPEG"); save("cmyk.jpg", base.convert("CMYK"), "JPEG")
save("444.jpg", base, "JPEG", subsampling=0); save("wide.png", Image.new("RGB", (300, 1)), "PNG")
save("a.gif", base, "GIF"); save("a.bmp", base, "BMP")

def st(name, tensors, meta=None):
    h, data = {}, b""
    if meta: h["__metadata__"] = meta
    for k, (dt, shape, raw) in tensors.items():
        h[k] = {"dtype": dt, "shape": shape, "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    hb = json.dumps(h).encode(); hb += b" " * (-len(hb) % 8)
    open("corpus-safetensors/" + name, "wb").write(struct.pack("<Q", len(hb)) + hb + data)
st("f32", {"a": ("F32", [2, 3], struct.pack("<6f", *range(6)))}, {"format": "pt"})
st("bf16", {"w": ("BF16", [4], b"\x80\x3f" * 4), "b": ("F16", [2], b"\x00\x3c" * 2)})
st("mixed", {"x": ("F64", [1], struct.pack("<d", 2.5)), "i": ("I64", [2], bytes(16)), "e": ("F32", [0], b"")})
st("nan", {"n": ("F32", [1], struct.pack("<f", float("nan")))})
PY
for f in "$TOP"/pipelines/base/config.json "$TOP"/tests/fixtures/hf/*.config.json; do
	n=$(basename "$f" .json)
	if [ -f "$TOP/pipelines/base/preprocessor_config.json" ] && [ "$n" = config ]; then
		{ cat "$f"; printf '\n#PRE#\n'; cat "$TOP/pipelines/base/preprocessor_config.json"; } >corpus-config/base
	else
		cp "$f" corpus-config/"$n"
	fi
done
h=$TOP/tests/fixtures/hf/llava-1.5-7b-hf
[ -f $h.full.config.json ] && { cat $h.full.config.json; printf '\n#PRE#\n'; cat $h.fast.preprocessor_config.json;
	printf '\n#PROC#\n'; cat $h.processor_config.json; } >corpus-config/llava-hf
cp "$TOP"/pipelines/base/tokenizer.json corpus-tokenizer/base
for f in "$TOP"/tests/fixtures/tok/*.json; do cp "$f" corpus-tokenizer/"$(basename "$f" .json)"; done
{ cat "$TOP"/pipelines/base/tokenizer.json; printf '\n#CFG#\n{"bos_token": "<s>", "add_bos_token": true}'; } >corpus-tokenizer/base-cfg
