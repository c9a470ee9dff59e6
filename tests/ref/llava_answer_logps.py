"""The summed log-probs of each pair's chosen and rejected answers under a
transformers LLaVA model, scored independently of seva: LLaVA's llava_v1 turn
"SYSTEM USER: <image>\\n{q} ASSISTANT: {a}</s>" through the processor's
tokenizer, the answer's log-probs summed (end-of-turn included), on the
processor's pixels. PAIRS is seva-cat --jsonl --base64 output. Used by the shell
tests that check models and adapters seva writes (t9060, t9120)."""
import base64, io, json
import torch
from PIL import Image

SYSTEM = ("A chat between a curious human and an artificial intelligence assistant. "
          "The assistant gives helpful, detailed, and polite answers to the human's questions.")


def answer_logps(model, config, proc, pairs):
    """{key: {"chosen": logp, "rejected": logp}} for every pair in PAIRS."""
    tok = proc.tokenizer
    image_id = config.image_token_index
    out = {}
    for line in open(pairs):
        p = json.loads(line)
        img = Image.open(io.BytesIO(base64.b64decode(p["jpg"]["base64"])))
        px = proc.image_processor(img, return_tensors="pt")["pixel_values"]
        prompt = "%s USER: <image>\n%s ASSISTANT:" % (SYSTEM, p["prompt.txt"])
        pids = tok(prompt)["input_ids"]
        res = {}
        for side in ("chosen", "rejected"):
            tids = tok(prompt + " " + p[side + ".txt"] + "</s>")["input_ids"]
            assert tids[:len(pids)] == pids
            k = pids.index(image_id)
            n_img = (px.shape[-1] // config.vision_config.patch_size) ** 2
            seq = tids[:k] + [image_id] * n_img + tids[k + 1:]
            with torch.no_grad():
                logits = model(input_ids=torch.tensor([seq]), pixel_values=px).logits[0].double()
            lp = torch.log_softmax(logits, -1)
            n, na = len(seq), len(tids) - len(pids)
            res[side] = sum(lp[t - 1, seq[t]].item() for t in range(n - na, n))
        out[p["__key__"]] = res
    return out
