#!/usr/bin/env python3
"""Makes tests/fixtures/idefics3/: small random Idefics3 / SmolVLM models as
transformers writes them, and what transformers computes with them.

Each model directory is written by Idefics3ForConditionalGeneration (or
SmolVLMForConditionalGeneration).save_pretrained and Idefics3Processor
.save_pretrained (the PIL image processor, image splitting off, a
byte-level BPE tokenizer.json trained here with the `tokenizers` library
and SmolVLM's added tokens, SmolVLM-Instruct's chat template). Weights are
re-drawn with O(1) activations so the log-probs are far from uniform.
expected.json holds, for a question and an answer on each test image:
  prompt     the chat template's text (add_generation_prompt)
  ids        Idefics3Processor's input_ids for prompt + " " + answer +
             "<end_of_utterance>" (image tokens expanded)
  pixels     its pixel_values (3, S, S), for the images named in `pixels`
  logp       log p(ids[t] | ids[<t]) for t >= 1, null where ids[t] is an
             image token (the saved directory loaded by from_pretrained in
             float64: the float32 or bf16 weights exactly)
  greedy     model.generate(do_sample=False) after the prompt, with its
             log-probs and the margin of each choice over the runner-up
Configurations: A (Idefics3, GQA, untied, f32), B (SmolVLM, tied, MHA,
bf16 weights, a 6x6 patch grid shuffled by 3), C (Idefics3, untied, GQA,
a 25x25 grid shuffled by 5, where Idefics3's fractional position buckets
are not the patch index), and two with SmolVLM's own tokenizer layout (a
byte-level BPE over the whole byte alphabet, SmolLM2's digit splitting and
special tokens, SmolVLM's added tokens down to the 36 row/column tags):
SMOL (SmolVLM-256M-Instruct in miniature: Idefics3, a 16x16 grid shuffled
by 4, GQA 3:1, tied, f32; the pipeline test t9080 runs every tool on it)
and E (SmolVLM, GQA 2:1, untied, bf16).

For reference values only; run with the test venv and commit the output
(NAMES: the configurations to write, all when none):
  tests/vendor/venv/bin/python tests/ref/make_idefics3.py tests/fixtures/idefics3 [NAMES...]
"""
import json
import math
import os
import sys

import numpy as np
import torch
from PIL import Image
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import (Idefics3Config, Idefics3ForConditionalGeneration,
                          Idefics3ImageProcessorPil, Idefics3Processor,
                          PreTrainedTokenizerFast, SmolVLMConfig,
                          SmolVLMForConditionalGeneration)

# SmolVLM-Instruct's chat_template
CHAT_TEMPLATE = (
    "<|im_start|>{% for message in messages %}{{message['role'] | capitalize}}"
    "{% if message['content'][0]['type'] == 'image' %}{{':'}}{% else %}{{': '}}{% endif %}"
    "{% for line in message['content'] %}{% if line['type'] == 'text' %}{{line['text']}}"
    "{% elif line['type'] == 'image' %}{{ '<image>' }}{% endif %}{% endfor %}"
    "<end_of_utterance>\n{% endfor %}{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}"
)
SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<fake_token_around_image>",
           "<image>", "<end_of_utterance>", "<global-img>"]
CORPUS = [
    "What is in the image? Describe the picture in detail.",
    "There is a red circle and a blue square on a white background.",
    "The image shows two green triangles next to a yellow star.",
    "How many shapes are there? There are three shapes.",
    "User: Assistant: Is there a cat? Yes, there is a small cat on the sofa.",
    "A photo of a dog running on the grass near a tree, with the sky above.",
]
QUESTION = "What is in the image?"
ANSWER = "There is a red circle and a blue square."


def make_tokenizer(out):
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    # the corpus's bytes only, so the vocabulary (and the fixture) stays small
    tr = trainers.BpeTrainer(vocab_size=120, special_tokens=SPECIAL, show_progress=False)
    tok.train_from_iterator(CORPUS * 20, tr)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|im_start|>",
                                   eos_token="<end_of_utterance>", pad_token="<|endoftext|>",
                                   unk_token="<|endoftext|>",
                                   additional_special_tokens=SPECIAL[2:])
    return fast


# SmolLM2's special tokens (ids 0-16), then what SmolVLM adds after the BPE
# vocabulary, in its order: the global-image tag, the 36 tile tags of image
# splitting, the image tokens, reserved tokens, the end of utterance.
SMOL_SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<repo_name>", "<reponame>",
                "<file_sep>", "<filename>", "<gh_stars>", "<issue_start>", "<issue_comment>",
                "<issue_closed>", "<jupyter_start>", "<jupyter_text>", "<jupyter_code>",
                "<jupyter_output>", "<jupyter_script>", "<empty_output>"]
SMOL_ADDED = (["<global-img>"] + ["<row_%d_col_%d>" % (i, j) for i in range(1, 7) for j in range(1, 7)]
              + ["<fake_token_around_image>", "<image>"]
              + ["<|reserved_special_token_%d|>" % i for i in range(3)] + ["<end_of_utterance>"])
SMOL_CORPUS = CORPUS + [
    "Describe this image. The picture shows 3 people, 12 birds and a café in 2024.",
    "Is there a red car? No. Is there a person? Yes, one person is standing.",
    "What colour is the sky? The sky is blue, with white clouds over the hills.",
]


def make_smol_tokenizer(out):
    """SmolVLM's tokenizer layout: byte-level BPE whose alphabet is every
    byte, digits split one by one before the byte-level split, no prefix
    space, the added tokens after the merges."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    tr = trainers.BpeTrainer(vocab_size=256 + len(SMOL_SPECIAL) + 160, special_tokens=SMOL_SPECIAL,
                             initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                             show_progress=False)
    tok.train_from_iterator(SMOL_CORPUS * 20, tr)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|im_start|>",
                                   eos_token="<end_of_utterance>", pad_token="<|im_end|>",
                                   unk_token="<|endoftext|>")
    fast.add_special_tokens({"additional_special_tokens": SMOL_ADDED})
    return fast


def randomize(model, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
            elif "norm" in name:
                p.copy_(1 + 0.1 * torch.randn(p.shape, generator=g))
            elif "embed" in name:
                p.copy_(0.5 * torch.randn(p.shape, generator=g))
            else:
                fan_in = p[0].numel() if p.dim() > 1 else p.numel()
                p.copy_(torch.randn(p.shape, generator=g) / math.sqrt(fan_in))


def test_images(out, names):
    """Smooth random RGB images of several sizes, as PNG (lossless)."""
    rng = np.random.default_rng(5)
    paths = []
    for name in names:
        w, h = (int(x) for x in name.split(".")[0].split("-")[1].split("x"))
        yy, xx = np.mgrid[0:h, 0:w]
        img = np.zeros((h, w, 3))
        for c in range(3):
            a, b, ph = rng.uniform(0.02, 0.3, 3)
            img[..., c] = 127.5 + 120 * np.sin(a * xx + b * yy + 7 * ph) * np.cos(0.05 * yy * (c + 1))
        img += rng.normal(0, 4, img.shape)
        path = os.path.join(out, name)
        Image.fromarray(np.clip(img, 0, 255).round().astype(np.uint8)).save(path)
        paths.append(path)
    return paths


def build(out, name, kind, vision, text, scale, tie, bf16, seed, images, pixels_for, smol_tok=False):
    d = os.path.join(out, name)
    os.makedirs(d, exist_ok=True)
    tok = make_smol_tokenizer(d) if smol_tok else make_tokenizer(d)
    V = len(tok)
    image_id = tok.convert_tokens_to_ids("<image>")
    eou = tok.convert_tokens_to_ids("<end_of_utterance>")
    Cfg, Model = (Idefics3Config, Idefics3ForConditionalGeneration) if kind == "idefics3" else \
        (SmolVLMConfig, SmolVLMForConditionalGeneration)
    cfg = Cfg(vision_config=vision,
              text_config=dict(model_type="llama", vocab_size=V, tie_word_embeddings=tie,
                               eos_token_id=eou, bos_token_id=tok.bos_token_id,
                               pad_token_id=tok.pad_token_id, **text),
              scale_factor=scale, image_token_id=image_id, tie_word_embeddings=tie)
    cfg._attn_implementation = "eager"
    torch.manual_seed(seed)
    model = Model(cfg).eval()
    randomize(model, seed)
    if tie:
        model.tie_weights()
    if bf16:
        model = model.to(torch.bfloat16)
    model.save_pretrained(d)
    model.generation_config.eos_token_id = eou
    model.generation_config.save_pretrained(d)
    side = vision["image_size"]
    ip = Idefics3ImageProcessorPil(do_image_splitting=False, size={"longest_edge": 4 * side},
                                   max_image_size={"longest_edge": side}, resample=1)
    seq = (side // vision["patch_size"]) ** 2 // scale ** 2
    proc = Idefics3Processor(image_processor=ip, tokenizer=tok, image_seq_len=seq,
                             chat_template=CHAT_TEMPLATE)
    proc.save_pretrained(d)

    # the reference runs the saved directory as transformers loads it
    model = Model.from_pretrained(d, dtype=torch.float64, attn_implementation="eager").eval()
    msgs = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": QUESTION}]}]
    prompt = proc.apply_chat_template(msgs, add_generation_prompt=True)
    cases = []
    for path in images:
        img = Image.open(path).convert("RGB")
        full = proc(text=[prompt + " " + ANSWER + "<end_of_utterance>"], images=[[img]],
                    return_tensors="pt")
        gen_in = proc(text=[prompt], images=[[img]], return_tensors="pt")
        ids = full["input_ids"][0]
        pv = full["pixel_values"].double()
        with torch.no_grad():
            logits = model(input_ids=full["input_ids"], pixel_values=pv,
                           pixel_attention_mask=full["pixel_attention_mask"]).logits[0]
            lp = torch.log_softmax(logits, -1)
            g = model.generate(input_ids=gen_in["input_ids"],
                               pixel_values=gen_in["pixel_values"].double(),
                               pixel_attention_mask=gen_in["pixel_attention_mask"],
                               attention_mask=gen_in["attention_mask"], max_new_tokens=8,
                               do_sample=False, output_scores=True, return_dict_in_generate=True,
                               eos_token_id=eou, pad_token_id=tok.pad_token_id)
        n0 = gen_in["input_ids"].shape[1]
        greedy = g.sequences[0, n0:].tolist()
        glp, margin = [], []
        for t, sc in enumerate(g.scores):
            l = torch.log_softmax(sc[0], -1)
            top = torch.topk(l, 2).values
            glp.append(float(l[greedy[t]]))
            margin.append(float(top[0] - top[1]))
        logp = [None if int(ids[t]) == image_id else float(lp[t - 1, ids[t]])
                for t in range(1, len(ids))]
        case = {"image": os.path.basename(path), "ids": ids.tolist(), "logp": logp,
                "greedy": greedy, "greedy_logp": glp, "greedy_margin": min(margin)}
        if os.path.basename(path) in pixels_for:
            case["pixels"] = [float("%.8g" % x) for x in full["pixel_values"][0, 0].flatten().tolist()]
        cases.append(case)
        assert min(margin) > 1e-3, (name, path, margin)
    with open(os.path.join(d, "expected.json"), "w") as f:
        json.dump({"question": QUESTION, "answer": ANSWER, "prompt": prompt,
                   "image_token_id": image_id, "image_seq_len": seq, "cases": cases}, f)


def main():
    out = sys.argv[1]
    names = set(sys.argv[2:]) or {"a", "b", "c", "smol", "e"}
    os.makedirs(out, exist_ok=True)
    imgs = test_images(out, ["img-37x23.png", "img-32x32.png", "img-20x51.png", "img-64x41.png"])
    photo = os.path.join(os.path.dirname(__file__), "..", "fixtures", "image", "photo-444p.jpg.png")
    imgs.append(os.path.abspath(photo))
    vis = dict(model_type="idefics3_vision", hidden_size=24, intermediate_size=40,
               num_hidden_layers=2, num_attention_heads=3, patch_size=4,
               hidden_act="gelu_pytorch_tanh", layer_norm_eps=1e-6)
    txt = dict(hidden_size=16, intermediate_size=24, num_hidden_layers=2, num_attention_heads=4,
               max_position_embeddings=128, rms_norm_eps=1e-5, rope_theta=10000.0)
    if "a" in names:
        build(out, "a", "idefics3", dict(vis, image_size=32), dict(txt, num_key_value_heads=2),
              2, False, False, 1, imgs, {"img-37x23.png", "img-20x51.png", "photo-444p.jpg.png"})
    if "b" in names:
        build(out, "b", "smolvlm", dict(vis, model_type="smolvlm_vision", image_size=24),
              dict(txt, num_key_value_heads=4, rope_theta=100000.0), 3, True, True, 4,
              imgs[:2], {"img-37x23.png"})
    if "c" in names:
        build(out, "c", "idefics3", dict(vis, image_size=50, patch_size=2, num_hidden_layers=1,
                                         hidden_size=12, intermediate_size=16),
              dict(txt, num_key_value_heads=1), 5, False, False, 3, imgs[3:4], {})
    # SmolVLM-256M-Instruct's proportions: patch 16 of 512 (here 4 of 64),
    # scale 4, 9 heads on 3 (here 3 on 1), tied, rope_theta 100000
    smol_vis = dict(vis, hidden_size=24, intermediate_size=48, num_attention_heads=2,
                    image_size=64, patch_size=4)
    smol_txt = dict(txt, hidden_size=24, intermediate_size=64, num_attention_heads=3,
                    max_position_embeddings=512, rope_theta=100000.0)
    photos = [os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "fixtures", "image", p))
              for p in ("photo-420.jpg.png", "photo-gray.jpg.png")]
    if "smol" in names:
        build(out, "smol", "idefics3", smol_vis, dict(smol_txt, num_key_value_heads=1), 4, True,
              False, 6, imgs + photos, {"img-64x41.png", "photo-420.jpg.png"}, smol_tok=True)
    if "e" in names:
        build(out, "e", "smolvlm", dict(smol_vis, model_type="smolvlm_vision", image_size=32),
              dict(smol_txt, num_attention_heads=4, hidden_size=16, num_key_value_heads=2), 2,
              False, True, 7, imgs[:3], {"img-20x51.png"}, smol_tok=True)


if __name__ == "__main__":
    main()
