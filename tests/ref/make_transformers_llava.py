#!/usr/bin/env python3
"""Writes small random LLaVA-1.5 directories *with transformers itself*, and
what transformers computes on them, for tests/unit/test_transformers.c.

For each configuration, tests/fixtures/transformers/NAME/ holds:
  model/     LlavaForConditionalGeneration.save_pretrained + LlavaProcessor
             (CLIPImageProcessor, LlamaTokenizerFast).save_pretrained: the
             files as a user's checkpoint has them
  *.jpg      real photos (skimage's astronaut, coffee, chelsea) cut to a few
             sizes and aspect ratios, so resize and crop both act
  expected.json, per photo: the prompt text, the processor's input_ids and
             pixel_values, the answer's ids, transformers' per-token
             log-probs of prompt + answer and its greedy continuation

The tokenizer is trained here with the tokenizers library in LLaMA-2's form
(SentencePiece-style BPE, byte fallback, "▁" for spaces) plus llava-hf's
added "<image>" and "<pad>": LLaMA-2's own 32000-token file would make the
fixtures megabytes. Run with the project's venv (tests/deps.sh makes it):

  tests/vendor/venv/bin/python tests/ref/make_transformers_llava.py

The prompt is seva's llava_v1 template, the one SeVa trains with (LLaVA's
conv_llava_v1: the Vicuna system line, "USER: <image>\\n{q} ASSISTANT:");
the answer follows as LLaVA writes it (" answer</s>")."""
import json
import os
import shutil
import sys

import numpy as np
import torch
from PIL import Image
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import (CLIPImageProcessor, CLIPVisionConfig, LlamaConfig, LlamaTokenizerFast,
                          LlavaConfig, LlavaForConditionalGeneration, LlavaProcessor)

TOP = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT = os.path.join(TOP, "tests/fixtures/transformers")
SKIMAGE = "/usr/lib/python3/dist-packages/skimage/data"
SYSTEM = ("A chat between a curious human and an artificial intelligence assistant. "
          "The assistant gives helpful, detailed, and polite answers to the human's questions.")

# (photo, crop box in the source, size written): wide, tall, square, small
PHOTOS = [("astronaut.png", (0, 0, 512, 320), (61, 38)),
          ("coffee.png", (100, 0, 400, 400), (27, 36)),
          ("chelsea.png", (50, 0, 350, 300), (48, 48))]
QUESTIONS = [("What is in the image?", "There is a red circle and a blue square."),
             ("Is there a cat in the picture? Answer yes or no.", "Yes"),
             ("Describe the scene in detail.", "A person stands near a tree.")]

CONFIGS = {
    # GQA decoder, untied head, f32 weights
    # (rope_theta 500: transformers 5 writes it inside text_config.rope_parameters)
    "llava-gqa-f32": dict(heads=4, kv_heads=2, tied=False, dtype=torch.float32, seed=1, rope=500.0),
    # multi-head, tied embeddings, bf16 weights on disk
    "llava-tied-bf16": dict(heads=4, kv_heads=4, tied=True, dtype=torch.bfloat16, seed=2, rope=10000.0),
}


def make_tokenizer(path):
    tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(),
                                     decoders.Fuse(), decoders.Strip(" ", 1, 0)])
    corpus = [SYSTEM] + [q + " " + a for q, a in QUESTIONS] + [
        "How many dogs are there? Two.", "What colour is the square? Blue.",
        "The photo shows a street with cars, trees and people walking.",
        "USER: ASSISTANT: yes no red green blue yellow circle square triangle star"]
    special = ["<unk>", "<s>", "</s>"] + ["<0x%02X>" % i for i in range(256)]
    # trained on words, as SentencePiece splits by whitespace: no piece holds
    # a "▁" past its start, so a prompt's ids are a prefix of its turn's
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="never")
    tok.train_from_iterator(corpus * 10, trainers.BpeTrainer(vocab_size=600, special_tokens=special,
                                                             show_progress=False))
    tok.pre_tokenizer = None  # LLaMA-2's tokenizer.json has none
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B",
                                                       special_tokens=[("<s>", 1)])
    tok.save(path)


def photos(dirname):
    names = []
    for i, (src, box, size) in enumerate(PHOTOS):
        im = Image.open(os.path.join(SKIMAGE, src)).convert("RGB").crop(box)
        im = im.resize(size, Image.LANCZOS)
        name = "photo%d-%dx%d.jpg" % (i, size[0], size[1])
        im.save(os.path.join(dirname, name), quality=90)
        names.append(name)
    return names


def build(name, c):
    torch.manual_seed(c["seed"])
    d = os.path.join(OUT, name)
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(os.path.join(d, "model"))
    tokfile = os.path.join(d, "tok.json")
    make_tokenizer(tokfile)
    tokenizer = LlamaTokenizerFast(tokenizer_file=tokfile, bos_token="<s>", eos_token="</s>",
                                   unk_token="<unk>", add_bos_token=True, add_eos_token=False,
                                   legacy=False)
    os.remove(tokfile)
    tokenizer.add_tokens(["<image>"], special_tokens=True)
    tokenizer.add_special_tokens({"pad_token": "<pad>"})
    image_id = tokenizer.convert_tokens_to_ids("<image>")

    vision = CLIPVisionConfig(hidden_size=32, intermediate_size=48, num_hidden_layers=3,
                              num_attention_heads=4, image_size=32, patch_size=8,
                              projection_dim=32)
    text = LlamaConfig(hidden_size=48, intermediate_size=80, num_hidden_layers=2,
                       num_attention_heads=c["heads"], num_key_value_heads=c["kv_heads"],
                       vocab_size=len(tokenizer), max_position_embeddings=128,
                       rms_norm_eps=1e-5, rope_theta=c["rope"],
                       tie_word_embeddings=c["tied"], pad_token_id=tokenizer.pad_token_id,
                       bos_token_id=1, eos_token_id=2)
    cfg = LlavaConfig(vision_config=vision, text_config=text, image_token_index=image_id,
                      projector_hidden_act="gelu", vision_feature_layer=-2,
                      vision_feature_select_strategy="default",
                      tie_word_embeddings=c["tied"])
    model = LlavaForConditionalGeneration(cfg).eval()
    with torch.no_grad():  # random weights big enough that answers are not flat
        for p in model.parameters():
            if p.dim() >= 2:
                p.normal_(0, 0.08)
    model.to(c["dtype"])
    model.save_pretrained(os.path.join(d, "model"))
    # what a user gets: the saved directory loaded back, computing in f32
    # (a bf16 round trip in memory would round the rotary buffers too)
    model = LlavaForConditionalGeneration.from_pretrained(os.path.join(d, "model"),
                                                          dtype=torch.float32).eval()
    ip = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32},
                            resample=3, do_center_crop=True, do_convert_rgb=True,
                            image_mean=[0.48145466, 0.4578275, 0.40821073],
                            image_std=[0.26862954, 0.26130258, 0.27577711])
    proc = LlavaProcessor(image_processor=ip, tokenizer=tokenizer, patch_size=8,
                          vision_feature_select_strategy="default", image_token="<image>",
                          num_additional_image_tokens=1)
    proc.save_pretrained(os.path.join(d, "model"))

    cases = []
    for k, photo in enumerate(photos(d)):
        q, a = QUESTIONS[k % len(QUESTIONS)]
        prompt = "%s USER: <image>\n%s ASSISTANT:" % (SYSTEM, q)
        inp = proc(images=Image.open(os.path.join(d, photo)), text=prompt, return_tensors="pt")
        ids = inp["input_ids"][0].tolist()
        # the answer's ids as LLaVA's training sees them: the tokens that
        # follow the prompt's in the whole turn "... ASSISTANT: {a}</s>"
        text_ids = tokenizer(prompt)["input_ids"]
        turn_ids = tokenizer(prompt + " " + a + "</s>")["input_ids"]
        assert turn_ids[:len(text_ids)] == text_ids, "the prompt's ids are not a prefix of the turn's"
        answer = turn_ids[len(text_ids):]
        full = torch.tensor([ids + answer])
        with torch.no_grad():
            logits = model(input_ids=full, pixel_values=inp["pixel_values"],
                           attention_mask=torch.ones_like(full)).logits[0].double()
            lp = torch.log_softmax(logits, -1)
            gen = model.generate(**inp, max_new_tokens=8, do_sample=False, min_new_tokens=8,
                                 pad_token_id=tokenizer.pad_token_id)
        seq = full[0].tolist()
        logp = [None] + [lp[t - 1, seq[t]].item() for t in range(1, len(seq))]
        # seva's ids hold one image token; transformers expands it in place
        n_img = ids.count(image_id)
        first = ids.index(image_id)
        collapsed = ids[:first + 1] + ids[first + n_img:]
        logp_c = logp[:first + 1] + logp[first + n_img:]
        logp_c = [None if (x is None or s == image_id) else x for x, s in
                  zip(logp_c, collapsed + answer)]
        cases.append({
            "photo": photo, "question": q, "answer": a, "prompt": prompt,
            "processor_ids": ids, "ids": collapsed, "answer_ids": answer,
            "image_tokens": n_img,
            "pixel_values": [round(v, 7) for v in inp["pixel_values"][0].flatten().tolist()],
            "logp": logp_c,
            "greedy": gen[0, len(ids):].tolist(),
        })
    meta = {"made_by": "tests/ref/make_transformers_llava.py",
            "transformers": __import__("transformers").__version__,
            "torch": torch.__version__, "dtype": str(c["dtype"]).replace("torch.", ""),
            "cases": cases}
    with open(os.path.join(d, "expected.json"), "w") as f:
        json.dump(meta, f, indent=0)
    print(name, "image token", image_id, "vocab", len(tokenizer), "cases", len(cases))


if __name__ == "__main__":
    for n, c in CONFIGS.items():
        if len(sys.argv) < 2 or n in sys.argv[1:]:
            build(n, c)
