"""One optimizer step of TRL's own DPOTrainer (trl 1.16) on a transformers
LLaVA model with a PEFT LoRA adapter, for every loss case given, in one
process; what it logged and the adapter it ended with, for
tests/t9140-dpo-trainer.sh to hold against seva-dpo's step on the same model,
pairs and settings. Run with the venv tests/deps.sh makes:

  trl_dpo_step.py BASE REF TRL_JSONL SEVA_ADAPTER CASES_JSON OUT_DIR

BASE        the policy's starting model (LlavaForConditionalGeneration dir)
REF         the reference model (TRL's ref_model; seva-dpo's --ref-model)
TRL_JSONL   the pairs as seva-pair --trl exports them, images relative to
            the working directory; loaded with datasets
SEVA_ADAPTER  the adapter directory of seva's step: TRL's LoraConfig is its
            adapter_config.json (r, lora_alpha, lora_dropout, use_rslora,
            target_modules, modules_to_save), and its lora_A tensors are the
            initial ones (see below), which TRL's adapter is given before
            the step
CASES_JSON  [{"name", "loss_type": [..], "loss_weights": [..] | null,
            "beta", "label_smoothing"}], and the settings shared by all:
            {"cases": [...], "lr", "adam_beta1", "adam_beta2", "adam_eps",
            "max_grad_norm", "batch"}
OUT_DIR     NAME.json per case: TRL's logged metrics of the step and the
            input ids it built; NAME.safetensors: the adapter after the step
            as PEFT saves it (lora_A, lora_B, the projector)

Why A can be taken from seva's finished step: LoRA's B starts at zero, so the
gradient of A (a product with B) is zero in the first step, and AdamW with
weight decay 0 leaves A where it started. B = 0 and the projector as the base
has it are PEFT's own starting state; seva starts there too."""
import json
import os
import sys
import tempfile

import torch
from datasets import List, load_dataset
from datasets import Image as ImageFeature
from peft import LoraConfig, get_peft_model_state_dict
from safetensors.torch import load_file, save_file
from transformers import AutoProcessor, LlavaForConditionalGeneration
from trl import DPOConfig, DPOTrainer

base_dir, ref_dir, pairs, seva_adapter, cases_path, out_dir = sys.argv[1:7]
cfg = json.load(open(cases_path))
torch.manual_seed(0)

# The llava_v1 turn seva trains with ("SYSTEM USER: <image>\nQ ASSISTANT: A</s>")
# as a chat template, for TRL's apply_chat_template. The LLaMA-2-style
# tokenizer puts a "▁" before every text it is given, and TRL tokenizes the
# completion on its own, so the answer follows "ASSISTANT:" without the space
# that the tokenizer adds back: the ids are those of the whole turn.
SYSTEM = ("A chat between a curious human and an artificial intelligence assistant. "
          "The assistant gives helpful, detailed, and polite answers to the human's questions.")
TEMPLATE = (
    "{{ bos_token }}" + SYSTEM +
    "{% for m in messages %}{% if m['role'] == 'user' %} USER: "
    "{% for c in m['content'] %}{% if c['type'] == 'image' %}<image>\n{% else %}{{ c['text'] }}{% endif %}"
    "{% endfor %}{% else %} ASSISTANT:{% for c in m['content'] %}{{ c['text'] }}{% endfor %}</s>"
    "{% endif %}{% endfor %}{% if add_generation_prompt %} ASSISTANT:{% endif %}")

processor = AutoProcessor.from_pretrained(base_dir)
processor.chat_template = TEMPLATE
dataset = load_dataset("json", data_files=pairs, split="train")
dataset = dataset.cast_column("images", List(ImageFeature()))
seva_a = {k: v for k, v in load_file(os.path.join(seva_adapter, "adapter_model.safetensors")).items()
          if ".lora_A." in k}
peft = json.load(open(os.path.join(seva_adapter, "adapter_config.json")))
ref_model = LlavaForConditionalGeneration.from_pretrained(ref_dir, dtype=torch.float32)


class Trainer(DPOTrainer):
    """DPOTrainer that keeps the batch it trained on (to check the ids)."""
    def compute_loss(self, model, inputs, *a, **kw):
        self.seen_ids = inputs["input_ids"].tolist()
        self.seen_mask = inputs["completion_mask"].tolist()
        return super().compute_loss(model, inputs, *a, **kw)


for case in cfg["cases"]:
    model = LlavaForConditionalGeneration.from_pretrained(base_dir, dtype=torch.float32)
    lora = LoraConfig(**{k: peft[k] for k in ("r", "lora_alpha", "lora_dropout", "use_rslora", "bias",
                                              "target_modules", "modules_to_save", "task_type")})
    with tempfile.TemporaryDirectory() as tmp:
        args = DPOConfig(
            output_dir=tmp, report_to="none", save_strategy="no", logging_steps=1, max_steps=1,
            per_device_train_batch_size=cfg["batch"], gradient_accumulation_steps=1,
            learning_rate=cfg["lr"], lr_scheduler_type="constant", warmup_steps=0, weight_decay=0.0,
            optim="adamw_torch", adam_beta1=cfg["adam_beta1"], adam_beta2=cfg["adam_beta2"],
            adam_epsilon=cfg["adam_eps"], max_grad_norm=cfg["max_grad_norm"],
            beta=case["beta"], loss_type=case["loss_type"], loss_weights=case["loss_weights"],
            label_smoothing=case["label_smoothing"], max_length=None, precompute_ref_log_probs=False,
            gradient_checkpointing=False, bf16=False, fp16=False, use_cpu=True, seed=0,
            dataloader_num_workers=0, disable_tqdm=True)
        trainer = Trainer(model=model, ref_model=ref_model, args=args, train_dataset=dataset,
                          processing_class=processor, peft_config=lora)
        # seva's initial A into PEFT's adapter (B is PEFT's zero, as seva's)
        given = 0
        with torch.no_grad():
            for name, p in trainer.model.named_parameters():
                if ".lora_A." in name:
                    k = name.replace(".default.", ".")
                    if k not in seva_a:
                        sys.exit("no %s in seva's adapter" % k)
                    p.copy_(seva_a[k])
                    given += 1
        if given != len(seva_a):
            sys.exit("TRL's adapter has %d lora_A, seva's %d" % (given, len(seva_a)))
        trainer.train()
    logged = [h for h in trainer.state.log_history if "loss" in h][0]
    json.dump({"logs": logged, "input_ids": trainer.seen_ids, "completion_mask": trainer.seen_mask,
               "lora_a_given": given}, open(os.path.join(out_dir, case["name"] + ".json"), "w"))
    state = get_peft_model_state_dict(trainer.model)
    save_file({k: v.detach().contiguous() for k, v in state.items()},
              os.path.join(out_dir, case["name"] + ".safetensors"))
    print("%s: %s" % (case["name"], {k: logged[k] for k in ("loss", "grad_norm", "rewards/margins")}),
          file=sys.stderr)
