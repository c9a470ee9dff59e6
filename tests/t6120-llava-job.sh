#!/bin/bash
# The main job on real-data-shaped input: a LLaVA-665k-like file (text-only
# items, multi-turn conversations, "human" and "user" roles, a duplicate id,
# LLaVA's answer-format suffixes) and photos, through pipelines/seva.sh
# --llava with a transformers-written model, from import to the table.
. "$(dirname "$0")/lib.sh"
FIX=$TOP/tests/fixtures/transformers/llava-gqa-f32
mkdir -p imgs/coco imgs/ocr_vqa
cp "$FIX"/photo0-61x38.jpg imgs/coco/000000000009.jpg
cp "$FIX"/photo1-27x36.jpg imgs/ocr_vqa/1497451612.jpg
cp "$FIX"/photo2-48x48.jpg imgs/coco/000000000025.jpg
cat >mix665k.json <<'EOF'
[{"id": "000000000009", "image": "coco/000000000009.jpg", "conversations": [
   {"from": "human", "value": "<image>\nWhat is on the plate?"}, {"from": "gpt", "value": "Food."},
   {"from": "human", "value": "Is it hot?\nAnswer the question using a single word or phrase."}, {"from": "gpt", "value": "No"}]},
 {"id": "i6aQ2ZB_0", "model": "", "conversations": [
   {"from": "human", "value": "Write a poem."}, {"from": "gpt", "value": "Roses."}]},
 {"id": "1497451612", "image": "ocr_vqa/1497451612.jpg", "conversations": [
   {"from": "user", "value": "Who wrote this book?\n<image>"}, {"from": "assistant", "value": "Anne"},
   {"from": "user", "value": "Is this a religious book?\nAnswer the question using a single word or phrase."},
   {"from": "assistant", "value": "No"}]},
 {"id": "000000000009", "image": "coco/000000000025.jpg", "conversations": [
   {"from": "human", "value": "<image>\nWhat animal is this?"}, {"from": "gpt", "value": "A cat."}]},
 {"id": "000000000025", "image": "coco/000000000025.jpg", "conversations": [
   {"from": "human", "value": "<image>\nWhat colour is the cat?\nAnswer with the option's letter from the given choices directly."},
   {"from": "gpt", "value": "B"}]}]
EOF
expect "the main job on a LLaVA-665k-shaped file (-k: the duplicate id skipped)" \
	"$TOP/pipelines/seva.sh" -q -o run -m "$FIX/model" -b 1 -r diffusion:t=800 --llava mix665k.json --images imgs \
	--cat "-k --turns all --strip-format" --dpo "--max-steps 2 -b 2"
stderr_has "the text-only item counted, not fatal" "mix665k.json: 1 of 5 records are text-only"
stderr_has "the duplicate id named and skipped" "record 4 \(id 000000000009\): key '000000000009' already used by record 1 \(skipped\)"
seva-cat --jsonl run/unlabeled.msgpack >unl.jsonl
check "every asking turn a question, the duplicate left out" \
	"$(jq -r .__key__ unl.jsonl | tr '\n' ' ')" = "000000000009 000000000009_q2 1497451612 1497451612_q2 000000000025 "
check "answer-format suffixes stripped, roles alike" \
	"$(jq -r .json.prompt unl.jsonl | tr '\n' '|')" = \
	"What is on the plate?|Is it hot?|Who wrote this book?|Is this a religious book?|What colour is the cat?|"
check "pairs were made and trained on" "$(seva-cat --jsonl run/pairs.msgpack | wc -l)" -ge 1
check "the aligned model and the table" -s run/table.txt
check "the clean views' tower output kept for DPO (--features)" "$(ls run/features | wc -l)" -ge 1
check "the report" -s run/report.html
done_testing
