#!/bin/bash
# seva-dpo's length options as TRL's DPOConfig names them: --max-length with
# --truncation-mode keep_start | keep_end, and the older --max-prompt-length
# and --max-completion-length. Where each sequence is cut is checked against
# TRL 1.16's own DataCollatorForPreference (and its dropping of pairs whose
# prompt fills max_length) on the same token ids.
. "$(dirname "$0")/lib.sh"
PY=/usr/bin/python3
VPY=$TOP/tests/vendor/venv/bin/python
FIX=$TOP/tests/fixtures/train

tiny_base base
seva-synth --split sft -n 8 -s 2 >sft.mp
# pairs with the image, and the same without (text only); rejected answers
# of other lengths: another sample's answer
$PY - sft.mp pairs.mp text.mp <<'PY'
import msgpack, sys
s = list(msgpack.Unpacker(open(sys.argv[1], "rb"), raw=False))
def pair(x, i, img):
    r = {"__key__": x["__key__"], "prompt.txt": x["json"]["prompt"],
         "chosen.txt": x["json"]["answer"], "rejected.txt": s[(i + 3) % len(s)]["json"]["answer"]}
    if img:
        r["png"] = x["png"]
    return msgpack.packb(r, use_bin_type=True)
open(sys.argv[2], "wb").write(b"".join(pair(x, i, 1) for i, x in enumerate(s)))
open(sys.argv[3], "wb").write(b"".join(pair(x, i, 0) for i, x in enumerate(s)))
PY

# bad values: exit 2 naming the option
for bad in "--max-length 1" "--max-length x" "--max-prompt-length 0" \
	"--max-completion-length 0" "--max-completion-length -3"; do
	set -- $bad
	expect_fail "$bad: usage error" 2 seva-dpo -m base -o x $bad pairs.mp
	stderr_has "... names $1 and its range" "^seva-dpo: $1: not a.* in \["
done
expect_fail "--truncation-mode keep_middle: usage error" 2 seva-dpo -m base -o x \
	--truncation-mode keep_middle pairs.mp
stderr_has "... names it and the modes" "^seva-dpo: --truncation-mode: .*keep_start.*keep_end"

# Each pair's ids as seva-dpo builds them: the template's prompt (the image
# placeholder expanded to the image's rows, as the LLaVA processor expands
# it before TRL's collator sees it) and each answer with the end of turn.
$PY - pairs.mp prompts.jsonl chosen.jsonl rejected.jsonl keys.txt <<'PY'
import json, msgpack, sys
s = list(msgpack.Unpacker(open(sys.argv[1], "rb"), raw=False))
for f, k in ((2, "prompt.txt"), (3, "chosen.txt"), (4, "rejected.txt")):
    open(sys.argv[f], "w").write("".join(json.dumps(x[k]) + "\n" for x in s))
open(sys.argv[5], "w").write("".join(x["__key__"] + "\n" for x in s))
PY
seva-tok --template --ids base prompts.jsonl >p.ids &&
	seva-tok --template --ids --no-image base prompts.jsonl >pt.ids &&
	seva-tok --eos base/tokenizer.json chosen.jsonl >c.ids &&
	seva-tok --eos base/tokenizer.json rejected.jsonl >r.ids ||
	{ not_ok "seva-tok gives the ids"; done_testing; exit 1; }
# the image's rows: (image_size / patch)^2, the class token dropped
IT=$(jq '(.vision_config.image_size / .vision_config.patch_size) | . * .' base/config.json)
IMG=$(jq .image_token_index base/config.json)

# What TRL keeps: for each MAX and mode, a line per kept pair "KEY C R"
# (answer tokens kept); pairs whose prompt alone reaches MAX are dropped.
if [ -x "$VPY" ]; then
	"$VPY" - "$IT" "$IMG" keys.txt c.ids r.ids p.ids pt.ids >trl.txt 2>trl.err <<'PY'
import json, sys
from trl.trainer.dpo_trainer import DataCollatorForPreference
it, img = int(sys.argv[1]), int(sys.argv[2])
keys = open(sys.argv[3]).read().split()
rd = lambda p: [json.loads(l) for l in open(p)]
c, r, p, pt = rd(sys.argv[4]), rd(sys.argv[5]), rd(sys.argv[6]), rd(sys.argv[7])
expand = lambda ids: [y for x in ids for y in ([x] * it if x == img else [x])]
for kind, prompts in (("image", [expand(x) for x in p]), ("text", pt)):
    for mode in ("keep_start", "keep_end"):
        for mx in (12, 15, 16, 20, 30, 40, 45, 64):
            ex = [{"prompt_ids": prompts[i], "chosen_ids": c[i], "rejected_ids": r[i], "key": keys[i]}
                  for i in range(len(keys))]
            if mode == "keep_start":  # DPOTrainer's filter of fully truncated examples
                ex = [e for e in ex if len(e["prompt_ids"]) < mx]
            if not ex:
                continue
            out = DataCollatorForPreference(pad_token_id=0, max_length=mx, truncation_mode=mode)(ex)
            cm = out["completion_mask"].sum(dim=1).tolist()
            n = len(ex)
            for i, e in enumerate(ex):
                print(kind, mode, mx, e["key"], cm[i], cm[n + i])
PY
	if [ -s trl.txt ]; then ok "TRL 1.16's collator runs on the pairs' ids"
	else not_ok "TRL 1.16's collator runs on the pairs' ids"; diag <trl.err; fi
else
	not_ok "$VPY is missing: run tests/deps.sh"
fi

# seva-dpo --score on the same pairs: ref.json says what it kept
seva_kept() { # KIND MODE MAX INPUT
	seva-dpo --score -q -m base --max-length "$3" --truncation-mode "$2" "$4" >s.mp 2>s.err ||
		{ echo "seva-dpo failed: $(cat s.err)"; return; }
	seva-cat --jsonl s.mp >s.jsonl &&
		jq -r --arg k "$1 $2 $3" '"\($k) \(.__key__) \(."ref.json".chosen_tokens) \(."ref.json".rejected_tokens)"' s.jsonl
}
: >seva.txt
for mx in 12 15 16 20 30 40 45 64; do
	seva_kept image keep_start $mx pairs.mp >>seva.txt
	seva_kept text keep_start $mx text.mp >>seva.txt
	seva_kept text keep_end $mx text.mp >>seva.txt
done
grep -v "^image keep_end" trl.txt | sort >trl.cmp
sort seva.txt >seva.cmp
same "keep_start (image and text) and keep_end (text): the answer tokens TRL keeps, pair by pair, and the pairs it drops" trl.cmp seva.cmp
check "... over $(wc -l <seva.txt) pair x length x mode cases, some cut" \
	"$(awk '{print $5 $6}' seva.txt | sort -u | wc -l)" -gt 8

# keep_end on a pair with an image: TRL refuses it for vision data
expect_fail "keep_end that would cut an image: exit 1" 1 seva-dpo --score -q -m base \
	--max-length 20 --truncation-mode keep_end pairs.mp
stderr_has "... saying why" "keep_end would cut the prompt's image"
expect_fail "... with -k the pairs are skipped, counted (exit 3)" 3 seva-dpo --score -k -q -m base \
	--max-length 20 --truncation-mode keep_end -o k.mp pairs.mp
expect "keep_end that cuts no image goes" seva-dpo --score -q -m base --max-length 64 \
	--truncation-mode keep_end -o ke.mp pairs.mp

# --max-prompt-length: a longer prompt drops the pair (TRL 1.16 cuts no
# prompt: with an image it cannot), counted
PL=$(jq -s "map(length + $IT - 1) | max" p.ids)
NL=$(jq -s "map(select(length + $IT - 1 == $PL)) | length" p.ids)
expect "--max-prompt-length $PL keeps every pair (the longest prompt's positions)" \
	seva-dpo --score -m base --max-prompt-length $PL -o pl.mp pairs.mp
check "... all 8" "$(seva-cat --jsonl pl.mp | jq -s length)" = 8
expect "--max-prompt-length $((PL - 1)) drops the longest" seva-dpo --score -m base \
	--max-prompt-length $((PL - 1)) -o pl1.mp pairs.mp
stderr_has "... counted ($NL)" "^seva-dpo: $NL pairs with a prompt longer than --max-prompt-length $((PL - 1)) skipped"
check "... the others kept" "$(seva-cat --jsonl pl1.mp | jq -s length)" = $((8 - NL))
# --max-completion-length: each answer's first N tokens (older TRL's), then --max-length
expect "--max-completion-length 4" seva-dpo --score -q -m base --max-completion-length 4 -o mc.mp pairs.mp
check "... every answer keeps its first 4 tokens (or all, if fewer)" \
	"$(seva-cat --jsonl mc.mp | jq -c '[."ref.json".chosen_tokens, ."ref.json".rejected_tokens]' | tr '\n' ' ')" \
	= "$($PY -c 'import json; rd = lambda p: [json.loads(l) for l in open(p)]
print("".join("[%d,%d] " % (min(len(a), 4), min(len(b), 4)) for a, b in zip(rd("c.ids"), rd("r.ids"))), end="")')"

# training: the reference must be scored on the same lengths
expect "pairs scored with --max-length 30" seva-dpo --score -q -m base --max-length 30 -o s30.mp pairs.mp
expect_fail "... training without it: refused" 1 seva-dpo -j 1 -q -m base --max-steps 1 -o t s30.mp
stderr_has "... naming the lengths" "ref.json was scored on .* answer tokens, this run keeps"
expect "... training with it" seva-dpo -j 1 -q -m base --max-steps 1 -b 4 --max-length 30 -o t30 s30.mp
check "training_args.json records the length options" \
	"$(jq -c '[.max_length, .truncation_mode, .max_prompt_length, .max_completion_length]' t30/training_args.json)" \
	= '[30,"keep_start",0,0]'
expect "a checkpoint with --max-length 30" seva-dpo -j 1 -q -m base --max-steps 2 -b 4 \
	--max-length 30 --save-every 1 --stop-after 1 -o c30 pairs.mp
expect_fail "... resumed with --max-length 40: refused" 1 seva-dpo -j 1 -q -m base --max-steps 2 \
	-b 4 --max-length 40 --resume -o c30 pairs.mp
stderr_has "... as other settings" "other settings"
done_testing
