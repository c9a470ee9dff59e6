#!/bin/bash
# Nothing is written outside the output a tool is given: a link planted in
# the output folder under the temporary name a tool is about to use
# (OUT.tmp.PID: the PID is easy to guess) is removed, never followed; a
# link at the final name is replaced, not written through; an existing
# directory that is not a model is not replaced. Each command runs under
# `exec` in a shell that planted the links first, so $$ is the tool's PID.
. "$(dirname "$0")/lib.sh"
PY=/usr/bin/python3
BASE=$TOP/pipelines/base

echo VICTIM >victim
cp victim victim.orig
intact() { # intact NAME: the victim file is as it was (then it is again)
	same "$1: the file the link points at is untouched" victim.orig victim
	cat victim.orig >victim
}

seva-synth --split unlabeled -n 2 -q -o u.mp
expect_fail "seva-cat: a link at OUT.tmp.PID (written through before)" 0 \
	sh -c 'ln -s "$PWD/victim" "o.mp.tmp.$$"; exec seva-cat -q -o o.mp u.mp'
intact "seva-cat -o"
check "... the output is a file of its own" -f o.mp -a ! -L o.mp
same "... holding the records" u.mp o.mp
check "... no temporary left" -z "$(ls o.mp.tmp.* 2>/dev/null)"

ln -s "$PWD/victim" o2.mp
expect "seva-cat: a link at the final name is replaced" seva-cat -q -o o2.mp u.mp
intact "seva-cat -o onto a link"
check "... o2.mp is now the output" -f o2.mp -a ! -L o2.mp

# seva-pair: images by key, the exports, the --random-negative spool
$PY -c '
import msgpack
with open("g.mp", "wb") as f:
    for k in ("a", "b"):
        f.write(msgpack.packb({"__key__": k, "png": b"\x89PNG-" + k.encode(), "json": {"prompt": "Q"},
                               "response.txt": "A red circle.", "aug.response.txt": "A blue circle."}))
'
mkdir -p imgs
ln -s "$PWD/victim" imgs/b.png
expect "seva-pair: links at an image's temporary and at the export's" \
	sh -c 'ln -s "$PWD/victim" "imgs/a.png.tmp.$$"; ln -s "$PWD/victim" "t.jsonl.tmp.$$"
		exec seva-pair -q --trl t.jsonl --images imgs -o /dev/null g.mp'
intact "seva-pair --images / --trl"
check "... imgs/a.png is the image" "$(cat imgs/a.png)" = "$(printf '\x89PNG-a')"
check "... imgs/b.png, a link before, is the image" "$(cat imgs/b.png)" = "$(printf '\x89PNG-b')" -a ! -L imgs/b.png
check "... t.jsonl is a file of two lines" "$(wc -l <t.jsonl)" = 2 -a ! -L t.jsonl
mkdir -p tmp
expect "seva-pair --random-negative: a link at the spool's temporary" \
	sh -c 'ln -s "$PWD/victim" "tmp/seva-pair.$$.msgpack.tmp.$$"; TMPDIR=$PWD/tmp exec seva-pair -q --random-negative -o rn.mp g.mp'
intact "seva-pair --random-negative"
# the spool is in a mkdtemp directory of its own: the planted link, under
# the name the spool once had, is not the run's to remove
check "... the spool is gone: TMPDIR holds the planted link alone" \
	"$(find tmp -mindepth 1 | sed 's/[0-9][0-9]*/N/g')" = "tmp/seva-pair.N.msgpack.tmp.N"

# training: the checkpoint, the model directory's temporary
seva-synth --split sft -n 2 -q -o s.mp
expect "seva-sft: a link at trainer.bin's temporary" \
	sh -c 'mkdir -p m.ckpt; ln -s "$PWD/victim" "m.ckpt/trainer.bin.tmp.$$"
		exec seva-sft -q -m "$0" -o m --save-every 1 --stop-after 1 --max-steps 3 -b 2 s.mp' "$BASE"
intact "seva-sft checkpoint"
check "... the checkpoint is a file" -f m.ckpt/trainer.bin -a ! -L m.ckpt/trainer.bin
mkdir -p elsewhere
echo KEEP >elsewhere/file
expect "seva-sft: a link to a folder at the model's temporary" \
	sh -c 'ln -s "$PWD/elsewhere" "m2.tmp.$$"; exec seva-sft -q -m "$0" -o m2 --max-steps 1 -b 2 s.mp' "$BASE"
check "... the folder it points at keeps its file" "$(cat elsewhere/file 2>/dev/null)" = KEEP
check "... the model is a folder of its own" -f m2/model.safetensors -a ! -L m2
expect "seva-sft: a dangling link there" \
	sh -c 'ln -s "$PWD/nowhere" "m3.tmp.$$"; exec seva-sft -q -m "$0" -o m3 --max-steps 1 -b 2 s.mp' "$BASE"
check "... nothing made where it pointed" ! -e nowhere

# tar members named '../../x' or '/tmp/x' are read by their last component:
# what a tool writes from them (a tar, or files named by key) stays inside
mkdir -p deep/er
$PY -c '
import io, tarfile
b = io.BytesIO()
with tarfile.open(fileobj=b, mode="w", format=tarfile.GNU_FORMAT) as t:
    for name, d in (("../../evil.json", b"{\"prompt\": \"q\"}"), ("../../evil.png", b"\x89PNG"),
                    ("/tmp/abs.json", b"{}"), ("/tmp/abs.png", b"\x89PNG")):
        i = tarfile.TarInfo(name); i.size = len(d); t.addfile(i, io.BytesIO(d))
open("deep/er/m.tar", "wb").write(b.getvalue())
'
expect "a tar of '../../' and absolute member names" sh -c 'cd deep/er && exec seva-cat -q -t -o o.tar m.tar'
check "... written as bare names" "$(tar tf deep/er/o.tar | tr '\n' ' ')" = "evil.json evil.png abs.json abs.png "
check "... nothing outside" ! -e evil.json -a ! -e deep/evil.json -a ! -e /tmp/abs.json

# existing outputs that are not the tool's to replace
mkdir -p notmodel
echo mine >notmodel/notes.txt
expect_fail "seva-sft -o a folder that is not a model: exit 1" 1 \
	seva-sft -q -m "$BASE" -o notmodel --max-steps 1 -b 2 s.mp
stderr_has "... saying so" "notmodel: exists and has no config\.json: not replacing it"
check "... its file kept" "$(cat notmodel/notes.txt)" = mine
expect_fail "seva-cat -o a folder: exit 1" 1 seva-cat -q -o notmodel u.mp
stderr_has "... at the open, saying so" "create 'notmodel': Is a directory"
check "... the folder as it was" "$(ls notmodel)" = notes.txt
expect_fail "seva-pair --trl a folder: exit 1 before reading" 1 seva-pair -q --trl notmodel --images imgs2 -o /dev/null g.mp
stderr_has "... saying so" "create 'notmodel': Is a directory"
check "... no image written" -z "$(ls imgs2 2>/dev/null)"
expect_fail "seva-sft -o an existing file: exit 1" 1 seva-sft -q -m "$BASE" -o victim --max-steps 1 -b 2 s.mp
stderr_has "... saying so" "victim: exists and is not a directory"
intact "seva-sft -o FILE"
done_testing
