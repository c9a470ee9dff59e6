#!/bin/bash
# seva-generate and seva-dpo --score on hostile models and views: NaN or Inf
# weights are an error naming the sample and the model (they gave empty
# answers and null log-probs with exit 0); an aug.json that cannot be
# applied as written (not an object, an unknown op, a t out of range) is a
# located error, not a view equal to the clean one.
. "$(dirname "$0")/lib.sh"
PY=/usr/bin/python3
BASE=$TOP/pipelines/base

weights() { # weights DIR BYTES: every weight of the base model set to BYTES (bf16)
	mkdir -p "$1"
	cp "$BASE"/*.json "$1"/
	$PY -c '
import json, struct, sys
d = open(sys.argv[1], "rb").read()
n = struct.unpack("<Q", d[:8])[0]
h = json.loads(d[8:8 + n])
dt = {v["dtype"] for k, v in h.items() if k != "__metadata__"}
assert dt == {"BF16"}, dt
fill = bytes.fromhex(sys.argv[3])
open(sys.argv[2] + "/model.safetensors", "wb").write(d[:8 + n] + fill * ((len(d) - 8 - n) // 2))
' "$BASE/model.safetensors" "$@"
}
weights nan c07f
weights inf 807f
seva-synth --split bench -n 1 -q -o b.mp
expect_fail "NaN weights: seva-generate exit 1" 1 seva-generate -q -m nan --views clean -o g.mp b.mp
stderr_has "... naming the sample and the model" "key [^:]*: the clean view's log-probs are not finite \(NaN or Inf in the model 'nan'\?\)"
expect_fail "Inf weights: exit 1" 1 seva-generate -q -m inf --views clean -o g.mp b.mp
stderr_has "... named" "the clean view's log-probs are not finite \(NaN or Inf in the model 'inf'\?\)"
expect "pairs to score" bash -c "seva-synth --split unlabeled -n 2 -q | seva-augment -q |
	seva-generate -q -m '$BASE' | seva-pair -q -k -o p.mp; true"
expect_fail "NaN weights: seva-dpo --score exit 1" 1 seva-dpo --score -q -m nan -o s.mp p.mp
stderr_has "... named" "key [^:]*: the reference log-probs are not finite \(NaN or Inf in the model 'nan'\?\)"

# aug.json as seva-generate reads it.
expect "an augmented sample" bash -c "seva-synth --split unlabeled -n 1 -q | seva-augment -q -o a.mp"
aug() { # aug NAME PYTHON-ON-j
	$PY -c '
import msgpack, sys
r = msgpack.unpackb(open("a.mp", "rb").read(), raw=False)
j = r["aug.json"]
exec(sys.argv[2])
r["aug.json"] = j
open(sys.argv[1] + ".mp", "wb").write(msgpack.packb(r, use_bin_type=True))
' "$@"
}
aug arr 'j = [j]'
aug warp 'j["ops"] = [{"op": "warp"}]'
aug bigt 'j["ops"][0]["t"] = 100000'
aug fract 'j["ops"][0]["t"] = 2.5'
expect "the sample as seva-augment wrote it" seva-generate -q -m "$BASE" -o ok.mp a.mp
expect_fail "aug.json an array: exit 1" 1 seva-generate -q -m "$BASE" -o o.mp arr.mp
stderr_has "... named" "aug\.json: not an object"
expect_fail "an unknown op: exit 1" 1 seva-generate -q -m "$BASE" -o o.mp warp.mp
stderr_has "... named" "aug\.json: op 1: unknown op 'warp'"
stderr_has "... with the record" "warp\.mp: record 1 \(key [^)]*\): aug\.json"
expect_fail "t = 100000: exit 1" 1 seva-generate -q -m "$BASE" -o o.mp bigt.mp
stderr_has "... named" "aug\.json: op 1: t is not a step in \[0, 1000\)"
expect_fail "t = 2.5: exit 1" 1 seva-generate -q -m "$BASE" -o o.mp fract.mp
done_testing
