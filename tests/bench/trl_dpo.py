#!/usr/bin/env python3
"""trl_dpo.py — TRL's own DPOTrainer as the DPO step's peer (tests/bench/trl.sh).

  trl_dpo.py CONFIG STEPS [THREADS]

CONFIG is one of ../shared/bench/configs (a LlavaForConditionalGeneration
config.json). transformers draws random weights for it and writes the model
to a temporary directory, with a processor it can read back: a
CLIPImageProcessor for the config's image size and a word-level tokenizer
of the config's vocabulary, "<image>" at its image_token_index. The data
are the seva DPO row's shape (tests/bench/engine.c): 8 pairs, each an image
(its patches as image tokens), a 32-token prompt, a 32-token chosen and a
32-token rejected answer, random words. TRL 1.16's DPOTrainer then trains
projector + decoder (the tower frozen, as the seva row) with bf16 mixed
precision (TrainingArguments bf16, torch.autocast on the CPU), sigmoid
loss, beta 0.1, AdamW lr 2e-6 without weight decay, batch 8, no gradient
checkpointing (TRL's default is on; seva keeps the activations), for one
warm-up step and STEPS timed ones, each timed from the trainer's
on_step_begin to its on_step_end: wall and process CPU seconds (all
threads).

The reference: TRL 1.16 refuses precompute_ref_log_probs=True for a vision
dataset (a ValueError in DPOTrainer.__init__); the script asks for it,
prints what TRL answered as a JSON line, and runs with the reference
model's forward in every step, which is the seva row's dpo_step (not its
dpo_step_ref_precomputed). One JSON line per figure.

For benchmarks only; the tools run no Python.
"""
import json
import os
import random
import sys
import tempfile
import time
import warnings

PAIRS, PROMPT, RESP = 8, 32, 32


def main():
    path, steps = sys.argv[1], int(sys.argv[2])
    threads = int(sys.argv[3]) if len(sys.argv) > 3 else 2
    os.environ.setdefault("TQDM_DISABLE", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    warnings.filterwarnings("ignore")
    import torch
    torch.set_num_threads(threads)
    import transformers
    import trl
    from datasets import Dataset
    from PIL import Image
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import (CLIPImageProcessor, LlavaConfig, LlavaForConditionalGeneration,
                              LlavaProcessor, PreTrainedTokenizerFast, TrainerCallback)
    from trl import DPOConfig, DPOTrainer

    name = os.path.splitext(os.path.basename(path))[0]
    with open(path) as f:
        raw = json.load(f)
    cfg = LlavaConfig(**{k: v for k, v in raw.items() if k != "architectures"})
    V, img_id = cfg.text_config.vocab_size, cfg.image_token_index
    vc = cfg.vision_config
    grid = vc.image_size // vc.patch_size

    torch.manual_seed(0)
    tmp = tempfile.mkdtemp(prefix="seva-trl-")
    # the words: w0.. for every id but the image's and the two specials
    specials = {img_id: "<image>", 0: "<pad>", 1: "</s>"}
    vocab = {specials.get(i, f"w{i}"): i for i in range(V)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<pad>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>",
                                   unk_token="<pad>", additional_special_tokens=["<image>"])
    ip = CLIPImageProcessor(size={"shortest_edge": vc.image_size},
                            crop_size={"height": vc.image_size, "width": vc.image_size})
    proc = LlavaProcessor(image_processor=ip, tokenizer=fast, patch_size=vc.patch_size,
                          vision_feature_select_strategy=cfg.vision_feature_select_strategy,
                          num_additional_image_tokens=1, image_token="<image>")
    LlavaForConditionalGeneration(cfg).save_pretrained(tmp)
    proc.save_pretrained(tmp)
    model = LlavaForConditionalGeneration.from_pretrained(tmp, dtype=torch.float32)
    proc = LlavaProcessor.from_pretrained(tmp)
    model.model.vision_tower.requires_grad_(False)

    rnd = random.Random(1)
    words = [w for w, i in vocab.items() if i not in specials]
    text = lambda n: " ".join(rnd.choice(words) for _ in range(n))
    rows = {"images": [], "prompt": [], "chosen": [], "rejected": []}
    for _ in range(PAIRS):
        px = bytes(rnd.randrange(256) for _ in range(3 * vc.image_size * vc.image_size))
        rows["images"].append([Image.frombytes("RGB", (vc.image_size, vc.image_size), px)])
        rows["prompt"].append("<image> " + text(PROMPT))
        rows["chosen"].append(" " + text(RESP))
        rows["rejected"].append(" " + text(RESP))
    data = Dataset.from_dict(rows)

    def args(precompute):
        return DPOConfig(output_dir=os.path.join(tmp, "out"), per_device_train_batch_size=PAIRS,
                         max_steps=1 + steps, learning_rate=2e-6, weight_decay=0.0, beta=0.1,
                         bf16=True, use_cpu=True, gradient_checkpointing=False,
                         precompute_ref_log_probs=precompute, max_length=None,
                         report_to=[], save_strategy="no", logging_steps=1000,
                         dataloader_num_workers=0, seed=0, disable_tqdm=True)

    common = {"config": name, "trl": trl.__version__, "transformers": transformers.__version__,
              "torch": torch.__version__.split("+")[0], "threads": threads}
    try:
        DPOTrainer(model=model, args=args(True), train_dataset=data, processing_class=proc)
        print(json.dumps({**common, "what": "trl_precompute", "accepted": True}), flush=True)
    except ValueError as e:
        print(json.dumps({**common, "what": "trl_precompute", "accepted": False,
                          "error": str(e).split(". ")[0]}), flush=True)

    class Clock(TrainerCallback):
        def __init__(self):
            self.wall, self.cpu = [], []

        def on_step_begin(self, a, state, control, **kw):
            self.t0, self.c0 = time.perf_counter(), time.process_time()

        def on_step_end(self, a, state, control, **kw):
            self.wall.append(time.perf_counter() - self.t0)
            self.cpu.append(time.process_time() - self.c0)

    clock = Clock()
    trainer = DPOTrainer(model=model, args=args(False), train_dataset=data, processing_class=proc,
                         callbacks=[clock])
    batch = trainer.data_collator([dict(r) for r in data])
    T = batch["input_ids"].shape[1]
    trainer.train()
    wall, cpu = clock.wall[1:], clock.cpu[1:]  # the first is the warm-up
    s, c = sum(wall) / len(wall), sum(cpu) / len(cpu)
    print(json.dumps({**common, "what": "trl_dpo_step", "precision": "bf16", "ref": "per step",
                      "batch": PAIRS, "seq_tokens": T, "steps": len(wall), "s_per_step": round(s, 4),
                      "cpu_s_per_step": round(c, 4), "pairs_per_s": round(PAIRS / s, 3),
                      "image_tokens": int((batch["input_ids"][0] == img_id).sum()),
                      "trainable": sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)}),
          flush=True)


if __name__ == "__main__":
    main()
