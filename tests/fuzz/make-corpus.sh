#!/bin/sh
# make-corpus.sh — small seed inputs for the fuzz harnesses: msgpack records
# with every field type, tar shards (plain, with a directory, a pax name),
# JSON lines.
set -e
cd "$(dirname "$0")"
rm -rf corpus-msgpack corpus-tar
mkdir -p corpus-msgpack corpus-tar
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
