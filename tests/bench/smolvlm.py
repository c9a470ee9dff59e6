#!/usr/bin/env python3
"""smolvlm.py — SmolVLM-256M's shapes for make bench (tests/bench/smolvlm.sh).

  smolvlm.py config DIR
      writes DIR/config.json as transformers' Idefics3Config writes it, with
      HuggingFaceTB/SmolVLM-256M-Instruct's shapes (the published config's
      values where they differ from Idefics3Config's defaults) and prints
      the checks below; seva draws its own random weights for it.
  smolvlm.py peer DIR [STEPS]
      the same figures as tests/bench/engine.c's, from transformers (torch
      in float32) on random weights of DIR/config.json, one JSON line each:
      image encoding (the SigLIP tower, post-LayerNorm, one image), greedy
      KV-cache generation at batch 1 and 8 (64 new tokens after the image
      and a 32-token prompt, the tower inside the timed call, as seva's),
      and the DPO step as seva-dpo runs it (reference log-probs scored
      once: policy forward, backward and AdamW on connector + decoder, the
      tower frozen and run once per pair, its output handed to both of the
      pair's sequences through image_hidden_states). Each figure is also
      given per CPU second of the process (all threads).

For benchmarks only; the tools run no Python.
"""
import json
import os
import sys
import time

# SmolVLM-256M-Instruct: SigLIP base patch16-512 tower, SmolLM2-135M decoder
VISION = dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
              num_attention_heads=12, patch_size=16, image_size=512)
TEXT = dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
            num_attention_heads=9, num_key_value_heads=3, head_dim=64,
            vocab_size=49280, max_position_embeddings=8192, rope_theta=100000.0,
            rms_norm_eps=1e-5, tie_word_embeddings=True, bos_token_id=1, eos_token_id=2)
SCALE_FACTOR, IMAGE_TOKEN_ID = 4, 49190
PAIRS, PROMPT, RESP, NEW_TOKENS = 8, 32, 32, 64


def make_config():
    from transformers import Idefics3Config
    cfg = Idefics3Config(vision_config=VISION, text_config=TEXT, scale_factor=SCALE_FACTOR,
                         image_token_id=IMAGE_TOKEN_ID, tie_word_embeddings=True)
    v, t = cfg.vision_config, cfg.text_config
    # what transformers fills in by itself must be SigLIP's and SmolLM2's
    assert v.hidden_act == "gelu_pytorch_tanh" and v.layer_norm_eps == 1e-6, v
    assert t.model_type == "llama" and t.hidden_act == "silu" and t.num_key_value_heads == 3, t
    assert t.tie_word_embeddings and cfg.tie_word_embeddings
    return cfg


def cmd_config(out):
    cfg = make_config()
    os.makedirs(out, exist_ok=True)
    cfg.save_pretrained(out)
    v, t = cfg.vision_config, cfg.text_config
    grid = v.image_size // v.patch_size
    seq = grid * grid // cfg.scale_factor ** 2
    print(f"SmolVLM-256M shapes: tower {v.num_hidden_layers}x{v.hidden_size} "
          f"({grid}x{grid} patches of {v.patch_size}), {seq} image tokens, decoder "
          f"{t.num_hidden_layers}x{t.hidden_size} ({t.num_attention_heads} heads, "
          f"{t.num_key_value_heads} kv), vocab {t.vocab_size}, tied", file=sys.stderr)


def cmd_peer(d, steps):
    import torch
    from transformers import Idefics3Config, Idefics3ForConditionalGeneration

    cfg = Idefics3Config.from_pretrained(d)
    torch.manual_seed(0)
    model = Idefics3ForConditionalGeneration(cfg).float().eval()
    ver = torch.__version__.split("+")[0]
    v, t = cfg.vision_config, cfg.text_config
    S, IT = v.image_size, (v.image_size // v.patch_size) ** 2 // cfg.scale_factor ** 2
    image_id = cfg.image_token_id
    g = torch.Generator().manual_seed(1)
    nparams = sum(p.numel() for p in model.parameters())

    def timed(f):
        t0, c0 = time.perf_counter(), time.process_time()
        r = f()
        return r, time.perf_counter() - t0, time.process_time() - c0

    def out(**kw):
        kw.update(config=os.path.basename(os.path.normpath(d)), torch=ver, threads=torch.get_num_threads())
        print(json.dumps(kw), flush=True)

    def ids(B, n):
        # the image's IT tokens, then n text tokens (no image token among them)
        x = torch.randint(0, t.vocab_size - 1, (B, n), generator=g)
        x[x >= image_id] += 1
        return torch.cat([torch.full((B, IT), image_id), x], 1)

    # image encoding: the tower alone, one image
    px = torch.randn(1, 3, S, S, generator=g)
    with torch.inference_mode():
        model.model.vision_model(pixel_values=px)
        reps = 2
        _, s, c = timed(lambda: [model.model.vision_model(pixel_values=px) for _ in range(reps)])
    out(what="image_encode", images=reps, s_per_image=round(s / reps, 4),
        cpu_s_per_image=round(c / reps, 4), params=nparams)

    # generation: greedy, exactly NEW_TOKENS new tokens
    for B in (1, 8):
        x = ids(B, PROMPT)
        pv = torch.randn(B, 1, 3, S, S, generator=g)
        kw = dict(do_sample=False, eos_token_id=None, pad_token_id=image_id)
        with torch.inference_mode():
            model.generate(input_ids=x, pixel_values=pv, max_new_tokens=4, min_new_tokens=4, **kw)
            y, s, c = timed(lambda: model.generate(input_ids=x, pixel_values=pv,
                                                   max_new_tokens=NEW_TOKENS,
                                                   min_new_tokens=NEW_TOKENS, **kw))
        n = (y.shape[1] - x.shape[1]) * B
        assert n == B * NEW_TOKENS, n
        out(what="generate_kvcache", batch=B, new_tokens=NEW_TOKENS, s=round(s, 4),
            cpu_s=round(c, 4), tokens_per_s=round(n / s, 1))

    # the DPO step, reference log-probs given (TRL's precompute_ref_log_probs)
    model.train()
    for p in model.model.vision_model.parameters():
        p.requires_grad_(False)
    train = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(train, lr=2e-6, weight_decay=0.0)
    x = ids(2 * PAIRS, PROMPT + RESP)  # pair i: rows 2i (chosen), 2i+1 (rejected)
    px = torch.randn(PAIRS, 3, S, S, generator=g)
    mask = torch.zeros(x.shape, dtype=torch.bool)
    mask[:, IT + PROMPT:] = True
    ref = torch.zeros(2 * PAIRS)

    def step():
        with torch.no_grad():
            feats = model.model.vision_model(pixel_values=px).last_hidden_state
        img = model.model.connector(feats).repeat_interleave(2, 0)  # (2*PAIRS, IT, C)
        logits = model(input_ids=x, image_hidden_states=img).logits[:, :-1].float()
        lp = torch.gather(logits.log_softmax(-1), 2, x[:, 1:, None])[..., 0]
        lp = (lp * mask[:, 1:]).sum(1)
        d = (lp - ref).view(PAIRS, 2)
        loss = -torch.nn.functional.logsigmoid(0.1 * (d[:, 0] - d[:, 1])).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        return loss.item()

    step()  # warm-up
    tot, cpu = 0.0, 0.0
    for _ in range(steps):
        _, s, c = timed(step)
        tot, cpu = tot + s, cpu + c
    out(what="dpo_step_ref_precomputed", batch=PAIRS, steps=steps, s_per_step=round(tot / steps, 4),
        cpu_s_per_step=round(cpu / steps, 4), pairs_per_s=round(PAIRS * steps / tot, 3))


def main():
    if len(sys.argv) >= 3 and sys.argv[1] == "config":
        cmd_config(sys.argv[2])
    elif len(sys.argv) in (3, 4) and sys.argv[1] == "peer":
        cmd_peer(sys.argv[2], int(sys.argv[3]) if len(sys.argv) == 4 else 1)
    else:
        sys.exit("usage: smolvlm.py config DIR | peer DIR [STEPS]")


if __name__ == "__main__":
    main()
