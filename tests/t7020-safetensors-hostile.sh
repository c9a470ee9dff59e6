#!/bin/bash
# safetensors layout as the safetensors library checks it: tensors end to
# end from offset 0 to the end of the file; overlapping offsets (every
# tensor at 0 loaded as one), gaps and trailing bytes are refused, and the
# library refuses the same files.
. "$(dirname "$0")/lib.sh"
PY=/usr/bin/python3
VPY=$TOP/tests/vendor/venv/bin/python
BASE=$TOP/pipelines/base

variant() { # variant DIR PYTHON (h: header dict, d: data bytes)
	mkdir -p "$1"
	cp "$BASE"/*.json "$1"/
	$PY -c '
import json, struct, sys
d = open(sys.argv[1], "rb").read()
n = struct.unpack("<Q", d[:8])[0]
h = json.loads(d[8:8 + n]); data = d[8 + n:]
exec(sys.argv[3])
hb = json.dumps(h).encode(); hb += b" " * (-len(hb) % 8)
open(sys.argv[2] + "/model.safetensors", "wb").write(struct.pack("<Q", len(hb)) + hb + data)
' "$BASE/model.safetensors" "$@"
}
variant same 'pass'
variant ovl '[v.__setitem__("data_offsets", [0, v["data_offsets"][1] - v["data_offsets"][0]]) for k, v in h.items() if k != "__metadata__"]'
variant gap '
last = max((k for k in h if k != "__metadata__"), key=lambda k: h[k]["data_offsets"][0])
b, e = h[last]["data_offsets"]; h[last]["data_offsets"] = [b + 2, e + 2]; data = data + b"\0\0"'
variant tail 'data = data + b"\0" * 16'
seva-synth --split bench -n 1 -q -o b.mp
expect "the file rewritten as it was loads" seva-generate -q -m same --views clean -o s.mp b.mp
for v in ovl gap tail; do
	expect_fail "$v: refused" 1 seva-generate -q -m $v --views clean -o o.mp b.mp
	cp "$TMP/.err" $v.err
done
check "overlap named" -n "$(grep "ovl/model\.safetensors: tensor '[^']*': data_offsets \[0, [0-9]*\] overlap the tensor before" ovl.err)"
check "gap named" -n "$(grep "gap/model\.safetensors: tensor '[^']*': data_offsets \[[0-9]*, [0-9]*\] leave a gap before it" gap.err)"
check "trailing bytes named" -n "$(grep "tail/model\.safetensors: 16 bytes of data after the last tensor" tail.err)"
if [ -x "$VPY" ]; then
	expect "the safetensors library refuses all three, reads the first" "$VPY" -c '
from safetensors import safe_open
safe_open("same/model.safetensors", "np")
for v in ("ovl", "gap", "tail"):
    try:
        safe_open(v + "/model.safetensors", "np")
    except Exception as e:
        continue
    raise SystemExit(v + ": the library reads it")
'
fi
done_testing
