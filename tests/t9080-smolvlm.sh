#!/bin/bash
# SmolVLM through every tool: tests/fixtures/idefics3/smol is SmolVLM-256M-
# Instruct in miniature, written by Idefics3ForConditionalGeneration
# .save_pretrained and Idefics3Processor (SmolVLM's tokenizer layout: a
# byte-level BPE over every byte, its added tokens). seva-tok, the pipeline
# augment -> generate -> pair -> DPO (full and LoRA, --score) -> generate,
# and seva-sft run on it; then transformers, from the venv tests/deps.sh
# makes, checks what they did: the tokenizer's ids and the chat prompt, the
# greedy answers token for token with their log-probs, the summed log-probs
# of --score, and that every model seva wrote loads with from_pretrained.
. "$(dirname "$0")/lib.sh"
PY=$TOP/tests/vendor/venv/bin/python
FIX=$TOP/tests/fixtures/idefics3/smol

# Samples: two photos and two drawings, two questions, a reference answer
# for seva-sft.
i=0
for f in "$TOP"/tests/fixtures/image/photo-420.jpg "$TOP"/tests/fixtures/image/photo-444p.jpg \
	"$TOP"/tests/fixtures/idefics3/img-64x41.png "$TOP"/tests/fixtures/idefics3/img-20x51.png; do
	ext=${f##*.}
	q="What is in the image?"
	[ $((i % 2)) = 1 ] && q="Describe this image in 3 words."
	printf '{"__key__":"s%d","%s":{"base64":"%s"},"json":{"prompt":"%s","answer":"There is a red circle."}}\n' \
		$i "$ext" "$(base64 -w0 "$f")" "$q"
	i=$((i + 1))
done >in.jsonl
seva-cat in.jsonl >in.msgpack

# seva-tok: text outside the tokenizer's training corpus (every byte must
# still spell), digits, added tokens; and the chat prompt.
cat >texts.jsonl <<'EOF'
"Hello, world! 1234 apples cost 5.67€ — naïve café 😀"
"<|im_start|>User:<image>What is this?<end_of_utterance>\nAssistant: <row_2_col_3>"
"\t tabs\n\nnewlines   spaces ÿ\u0001\u007f"
EOF
printf '"What is in the image?"\n' >questions.jsonl
expect "seva-tok on a SmolVLM directory" seva-tok "$FIX" texts.jsonl
cp .out tok.jsonl
expect "seva-tok --template on a SmolVLM directory" seva-tok --template "$FIX" questions.jsonl
cp .out template.jsonl
expect "seva-tok -d reads its ids back" seva-tok -d "$FIX" tok.jsonl
cp .out detok.jsonl
expect "decoded text is the text" jq -e -n --slurpfile a texts.jsonl --slurpfile b detok.jsonl '$a == $b'

# The pipeline.
expect "augment" seva-augment -q -r diffusion:t=800 -o aug.msgpack in.msgpack
expect "generate on the transformers-written SmolVLM" seva-generate -q -m "$FIX" --max-new-tokens 8 \
	-o gen.msgpack aug.msgpack
expect "pair" seva-pair -q -o pairs.msgpack gen.msgpack
seva-cat --jsonl pairs.msgpack >pairs.jsonl
check "pairs to train on" "$(wc -l <pairs.jsonl)" -ge 2
expect "DPO --score (the reference)" seva-dpo --score -q -m "$FIX" -o scored.msgpack pairs.msgpack
expect "DPO, full fine-tuning, on the scored pairs" seva-dpo -q -m "$FIX" -o full --full --lr 1e-2 \
	--max-steps 2 -b 2 scored.msgpack
expect "DPO, LoRA" seva-dpo -q -m "$FIX" -o lora --lora 4 --lr 1e-2 --max-steps 2 -b 2 pairs.msgpack
check "LoRA wrote its adapter beside the merged model" -f lora/adapter/adapter_model.safetensors
expect "generate with the DPO-trained model" seva-generate -q -m full --max-new-tokens 8 \
	-o gen2.msgpack aug.msgpack
expect "SFT, full" seva-sft -q -m "$FIX" -o sft --lr 1e-2 --max-steps 2 -b 2 in.msgpack
expect "SFT, LoRA" seva-sft -q -m "$FIX" -o sftlora --lora 4 --lr 1e-2 --max-steps 2 -b 2 in.msgpack
for m in full lora sft sftlora; do
	expect "$m: --score" seva-dpo --score -q -m $m -o $m.scored.msgpack pairs.msgpack
	seva-cat --jsonl $m.scored.msgpack | jq -c '{(.__key__): ."ref.json"}' | jq -s 'add' >$m.seva.json
done
seva-cat --jsonl scored.msgpack | jq -c '{(.__key__): ."ref.json"}' | jq -s 'add' >base.seva.json
seva-cat --jsonl gen.msgpack | jq -c '{(.__key__): {r: ."response.txt", g: ."gen.json"}}' | jq -s 'add' \
	>gen.seva.json

# Several images and video are refused by name, by every tool that reads
# a question; with -k the sample is skipped and counted.
img=$(base64 -w0 "$TOP/tests/fixtures/idefics3/img-32x32.png")
printf '{"__key__":"two","png":{"base64":"%s"},"jpg":{"base64":"%s"},"json":{"prompt":"Which differs?"}}\n' \
	"$img" "$img" >two-fields.jsonl
printf '{"__key__":"two","png":{"base64":"%s"},"json":{"prompt":"<image>Is it as <image>?"}}\n' \
	"$img" >two-placeholders.jsonl
printf '{"__key__":"vid","mp4":{"base64":"AAAAGGZ0eXBtcDQy"},"json":{"prompt":"What happens?"}}\n' >video.jsonl
printf '{"__key__":"conv","png":{"base64":"%s"},"json":{"conversations":[%s,%s,%s,%s]}}\n' "$img" \
	'{"from":"human","value":"<image>\nWhat is it?"}' '{"from":"gpt","value":"A circle."}' \
	'{"from":"human","value":"<image>\nAnd this one?"}' '{"from":"gpt","value":"A square."}' >two-turns.jsonl
expect_fail "generate: two image fields refused" 1 seva-generate -q -m "$FIX" two-fields.jsonl
stderr_has "... naming both and saying why" "record 1 \(key two\): fields 'png' and 'jpg': several images in one sample are not supported"
expect_fail "generate: two <image> placeholders refused" 1 seva-generate -q -m "$FIX" two-placeholders.jsonl
stderr_has "... naming json.prompt" "json.prompt: 2 <image> placeholders: several images in one sample are not supported"
expect_fail "generate: a video field refused" 1 seva-generate -q -m "$FIX" video.jsonl
stderr_has "... naming the field" "field 'mp4': video is not supported"
expect_fail "sft: <image> in two turns refused" 1 seva-sft -q -m "$FIX" -o bad-sft --max-steps 1 two-turns.jsonl
stderr_has "... naming json.conversations" "json.conversations: 2 <image> placeholders"
seva-cat --jsonl --base64 pairs.msgpack >pairs.b64.jsonl
head -1 pairs.b64.jsonl | jq -c '. + {"second.png": (.jpg // .png)}' >two-pair.jsonl
expect_fail "dpo: a pair with a second image refused" 1 seva-dpo -q -m "$FIX" -o bad-dpo --max-steps 1 \
	two-pair.jsonl
stderr_has "... naming both fields" "fields '(jpg|png)' and 'second.png': several images in one sample are not supported"
expect_fail "generate -k: skipped and counted (exit 3)" 3 seva-generate -k -m "$FIX" --max-new-tokens 2 \
	-o /dev/null video.jsonl in.msgpack
stderr_has "... the skip counted" "1 of 5 samples skipped"

if [ ! -x "$PY" ]; then
	not_ok "the python environment is missing: run tests/deps.sh"
	done_testing
	exit
fi

# transformers' side, from the same files: one process for every check.
cat >hf.py <<'EOF'
import base64, io, json, re, sys, torch
from PIL import Image
from transformers import AutoProcessor, Idefics3ForConditionalGeneration
fix, pairs_path, samples_path = sys.argv[1:4]
proc = AutoProcessor.from_pretrained(fix)
tok = proc.tokenizer
eou = tok.convert_tokens_to_ids("<end_of_utterance>")
out = {"tok": [tok(json.loads(l), add_special_tokens=False)["input_ids"] for l in open("texts.jsonl")]}
def chat(q):
    msgs = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": q}]}]
    return proc.apply_chat_template(msgs, add_generation_prompt=True)
def image(rec):
    for k in ("jpg", "png"):
        if k in rec:
            return Image.open(io.BytesIO(base64.b64decode(rec[k]["base64"]))).convert("RGB")
# the processor's text, its run of image tokens written once (seva-tok
# --template shows the image block with one image token)
blank = Image.new("RGB", (40, 30))
out["template"] = [re.sub("(<image>)+", "<image>",
                          tok.decode(proc(text=[chat(json.loads(l))], images=[[blank]])["input_ids"][0]))
                   for l in open("questions.jsonl")]
def load(d):
    m, info = Idefics3ForConditionalGeneration.from_pretrained(d, dtype=torch.float64,
                                                               output_loading_info=True)
    bad = {k: v for k, v in info.items() if v and k != "error_msgs"}
    if bad:
        print(d, "loading info:", bad, file=sys.stderr); sys.exit(3)
    return m.eval()
def score(m, pairs):
    res = {}
    for p in pairs:
        img, prompt = image(p), chat(p["prompt.txt"])
        n0 = proc(text=[prompt], images=[[img]], return_tensors="pt")["input_ids"].shape[1]
        r = {}
        for side in ("chosen", "rejected"):
            x = proc(text=[prompt + " " + p[side + ".txt"] + "<end_of_utterance>"], images=[[img]],
                     return_tensors="pt")
            with torch.no_grad():
                lp = torch.log_softmax(m(input_ids=x["input_ids"], pixel_values=x["pixel_values"].double(),
                                         pixel_attention_mask=x["pixel_attention_mask"]).logits[0], -1)
            ids = x["input_ids"][0]
            r[side] = sum(float(lp[t - 1, ids[t]]) for t in range(n0, len(ids)))
        res[p["__key__"]] = r
    return res
pairs = [json.loads(l) for l in open(pairs_path)]
base = load(fix)
out["base"] = score(base, pairs)
for d in ("full", "lora", "sft", "sftlora"):
    out[d] = score(load(d), pairs)
# the adapter seva wrote, as PEFT loads it onto the base: which modules it
# wraps, what it saves whole, a warning about keys it lacks, its log-probs
import warnings
from peft import PeftModel
from peft.tuners.lora import LoraLayer
from peft.utils import ModulesToSaveWrapper
for d in ("lora", "sftlora"):
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        pm = PeftModel.from_pretrained(load(fix), d + "/adapter").eval()
    out[d + "_peft"] = {
        "warnings": [str(x.message) for x in w if "adapter keys" in str(x.message)],
        "wrapped": sorted(n for n, mod in pm.named_modules() if isinstance(mod, LoraLayer)),
        "saved": sorted(n for n, mod in pm.named_modules() if isinstance(mod, ModulesToSaveWrapper)),
        "score": score(pm, pairs)}
gen = {}
for l in open(samples_path):
    s = json.loads(l)
    x = proc(text=[chat(s["json"]["prompt"])], images=[[image(s)]], return_tensors="pt")
    with torch.no_grad():
        g = base.generate(**{k: v for k, v in x.items()}, max_new_tokens=8, do_sample=False,
                          output_scores=True, return_dict_in_generate=True, eos_token_id=eou,
                          pad_token_id=tok.pad_token_id)
    ids = g.sequences[0, x["input_ids"].shape[1]:].tolist()
    lps = [float(torch.log_softmax(sc[0].double(), -1)[i]) for sc, i in zip(g.scores, ids)]
    # the text as SeVa keeps an answer: stripped of white space
    gen[s["__key__"]] = {"ids": ids, "text": tok.decode([i for i in ids if i != eou]).strip(" \t\r\n"),
                         "mean_logp": sum(lps) / len(lps)}
out["gen"] = gen
json.dump(out, sys.stdout)
EOF
seva-cat --jsonl --base64 in.msgpack >in.b64.jsonl
expect "transformers loads every model seva wrote (no missing, unexpected or mismatched weight)" \
	"$PY" hf.py "$FIX" pairs.b64.jsonl in.b64.jsonl
cp .out hf.json

# agree NAME FILTER: jq FILTER on transformers' results ($h) and seva's ($s,
# from FILE) holds; if not, both sides are shown.
agree() {
	if jq -e -n --slurpfile h hf.json --slurpfile s "$2" "$3" >/dev/null; then ok "$1"
	else not_ok "$1"; jq -c -n --slurpfile h hf.json --slurpfile s "$2" "[\$h[0].${4:-x}, \$s]" | diag; fi
}
agree "seva-tok's ids are the tokenizers library's" tok.jsonl '$h[0].tok == $s' tok
agree "seva-tok --template is the chat prompt the processor tokenizes" template.jsonl \
	'$h[0].template == $s' template
agree "greedy answers on the clean view are model.generate's, token for token" gen.seva.json '
	$h[0].gen | to_entries | length == 4 and all(.value.text == $s[0][.key].r and
		(.value.ids | length) == $s[0][.key].g.tokens.clean)' gen
agree "their mean log-probs within 5e-5" gen.seva.json '
	[$h[0].gen | to_entries[] | (.value.mean_logp - $s[0][.key].g.mean_logp.clean) | fabs] | max < 5e-5' gen
for m in lora sftlora; do
	agree "$m: PEFT wraps the decoder's seven projections in each layer, and nothing of the vision tower" \
		$m/adapter/adapter_config.json '($h[0].'$m'_peft.wrapped | length) == 14 and
		all($h[0].'$m'_peft.wrapped[]; test("^base_model\\.model\\.model\\.text_model\\.layers\\.[01]\\.(self_attn|mlp)\\."))' \
		${m}_peft.wrapped
	agree "$m: PEFT keeps the trained connector whole (modules_to_save), with no key missing" \
		$m/adapter/adapter_config.json '$h[0].'$m'_peft.saved == ["base_model.model.model.connector"] and
		$h[0].'$m'_peft.warnings == []' ${m}_peft.saved
done
for m in base full lora sft sftlora; do
	agree "$m: seva-dpo --score's summed log-probs equal transformers' (within 5e-5 a token)" \
		$m.seva.json '[$h[0].'$m' | to_entries[] | .key as $k | .value | to_entries[] |
		 ((.value - $s[0][$k][.key]) | fabs) / $s[0][$k][.key + "_tokens"]] |
		length >= 4 and max < 5e-5' $m
done
for m in lora sftlora; do
	agree "$m: the base with seva's adapter in PEFT gives seva's log-probs of the trained model (within 5e-5 a token)" \
		$m.seva.json '[$h[0].'$m'_peft.score | to_entries[] | .key as $k | .value | to_entries[] |
		 ((.value - $s[0][$k][.key]) | fabs) / $s[0][$k][.key + "_tokens"]] |
		length >= 4 and max < 5e-5' ${m}_peft.score
done
check "DPO changed the model" "$(cmp -s full/model.safetensors "$FIX/model.safetensors" && echo same)" = ""
check "DPO changed its answers or their log-probs" \
	"$(seva-cat --jsonl gen2.msgpack | jq -c '[."response.txt", ."gen.json".mean_logp]' | md5sum)" != \
	"$(seva-cat --jsonl gen.msgpack | jq -c '[."response.txt", ."gen.json".mean_logp]' | md5sum)"
done_testing
