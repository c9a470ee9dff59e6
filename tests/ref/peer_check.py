#!/usr/bin/python3
"""Loads a seva (or llava-hf) model directory into the PyTorch peer
../shared/bench/torchvlm.py and prints per-token log-probs, for checking
seva's numbers against a third implementation.

  peer_check.py MODEL_DIR [--expected EXPECTED.json] [--ids 1,5,66,7 ...]

With --expected (tests/fixtures/ref/expected.json or one made the same way)
the pixels and ids come from that file and the script prints the largest
difference from its "logp" and exits 1 beyond 1e-4; otherwise it uses
--ids (the image token anywhere once) and a seeded random image, and prints
{"ids": [...], "logp": [...]} as JSON.

The peer's module names differ from Hugging Face's; they are mapped here.
The peer hard-codes quick_gelu, exact gelu in the projector, LayerNorm eps
1e-5 and vision_feature_layer -2; other configs are refused.
safetensors is parsed by hand (no safetensors package in Debian 12).
"""
import argparse
import json
import os
import struct
import sys

import numpy as np
import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
for cand in (os.path.join(HERE, "../../../shared/bench"), "/work/shared/bench"):
    if os.path.exists(os.path.join(cand, "torchvlm.py")):
        sys.path.insert(0, cand)
        break
import torchvlm  # noqa: E402

DTYPES = {"F32": np.float32, "F16": np.float16, "F64": np.float64, "I64": np.int64}


def read_safetensors(path):
    out = {}
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
        data = f.read()
    for name, e in header.items():
        if name == "__metadata__":
            continue
        b, end = e["data_offsets"]
        raw = data[b:end]
        if e["dtype"] == "BF16":
            u = np.frombuffer(raw, dtype=np.uint16).astype(np.uint32) << 16
            arr = u.view(np.float32)
        else:
            arr = np.frombuffer(raw, dtype=DTYPES[e["dtype"]])
        out[name] = torch.from_numpy(arr.astype(np.float32) if arr.dtype != np.int64 else arr.copy()).reshape(e["shape"])
    return out


def read_dir(d):
    idx = os.path.join(d, "model.safetensors.index.json")
    if os.path.exists(idx):
        files = sorted(set(json.load(open(idx))["weight_map"].values()))
    else:
        files = ["model.safetensors"]
    w = {}
    for fn in files:
        w.update(read_safetensors(os.path.join(d, fn)))
    # the newer layout → the old one
    rename = (("model.vision_tower.", "vision_tower."), ("model.multi_modal_projector.", "multi_modal_projector."),
              ("model.language_model.", "language_model.model."), ("lm_head.", "language_model.lm_head."))
    out = {}
    for k, v in w.items():
        for a, b in rename:
            if k.startswith(a):
                k = b + k[len(a):]
                break
        out[k] = v
    return out


def build(d):
    cfg = json.load(open(os.path.join(d, "config.json")))
    vc, tc = cfg.get("vision_config", {}), cfg.get("text_config", {})
    if (vc.get("hidden_act", "quick_gelu") != "quick_gelu" or cfg.get("projector_hidden_act", "gelu") != "gelu"
            or cfg.get("vision_feature_layer", -2) != -2 or vc.get("layer_norm_eps", 1e-5) != 1e-5
            or cfg.get("vision_feature_select_strategy", "default") != "default"):
        sys.exit("peer_check: the peer only models quick_gelu/gelu, eps 1e-5, feature layer -2, 'default'")
    c = torchvlm.from_llava_config(os.path.join(d, "config.json"))
    m = torchvlm.Vlm(c).eval()
    W = read_dir(d)
    v, P = "vision_tower.vision_model.", c["patch"]
    sd = {
        "vit.patch.weight": W[v + "embeddings.patch_embedding.weight"].reshape(c["v_dim"], -1),
        "vit.cls": W[v + "embeddings.class_embedding"],
        "vit.pos": W[v + "embeddings.position_embedding.weight"],
        "vit.pre.weight": W[v + "pre_layrnorm.weight"], "vit.pre.bias": W[v + "pre_layrnorm.bias"],
        "proj1.weight": W["multi_modal_projector.linear_1.weight"], "proj1.bias": W["multi_modal_projector.linear_1.bias"],
        "proj2.weight": W["multi_modal_projector.linear_2.weight"], "proj2.bias": W["multi_modal_projector.linear_2.bias"],
        "embed.weight": W["language_model.model.embed_tokens.weight"],
        "norm.w": W["language_model.model.norm.weight"],
        "head.weight": W.get("language_model.lm_head.weight", W["language_model.model.embed_tokens.weight"]),
    }
    for i in range(c["v_layers"]):
        p, q = f"{v}encoder.layers.{i}.", f"vit.layers.{i}."
        for ours, theirs in (("ln1", "layer_norm1"), ("ln2", "layer_norm2"), ("o", "self_attn.out_proj"),
                             ("fc1", "mlp.fc1"), ("fc2", "mlp.fc2")):
            sd[q + ours + ".weight"] = W[p + theirs + ".weight"]
            sd[q + ours + ".bias"] = W[p + theirs + ".bias"]
        sd[q + "qkv.weight"] = torch.cat([W[p + f"self_attn.{x}_proj.weight"] for x in "qkv"], 0)
        sd[q + "qkv.bias"] = torch.cat([W[p + f"self_attn.{x}_proj.bias"] for x in "qkv"], 0)
    for i in range(c["layers"]):
        p, q = f"language_model.model.layers.{i}.", f"layers.{i}."
        sd[q + "n1.w"] = W[p + "input_layernorm.weight"]
        sd[q + "n2.w"] = W[p + "post_attention_layernorm.weight"]
        for ours, theirs in (("q", "self_attn.q_proj"), ("k", "self_attn.k_proj"), ("v", "self_attn.v_proj"),
                             ("o", "self_attn.o_proj"), ("gate", "mlp.gate_proj"), ("up", "mlp.up_proj"),
                             ("down", "mlp.down_proj")):
            sd[q + ours + ".weight"] = W[p + theirs + ".weight"]
    m.load_state_dict(sd)
    return m, c, cfg.get("image_token_index", 32000)


@torch.no_grad()
def logprobs(m, img_token, ids, pixels):
    """log p(ids[t] | ids[<t], image) for t >= 1 (None at the image token),
    with the image spliced where its token is, as LLaVA does."""
    m = m.double()
    img = m.image_embeds(pixels.double()[None])[0]
    pos = ids.index(img_token)
    emb = m.embed(torch.tensor(ids))
    x = torch.cat([emb[:pos], img, emb[pos + 1:]], 0)[None]
    for layer in m.layers:
        x = layer(x)
    lp = F.log_softmax(m.head(m.norm(x))[0], -1)
    out = [None]
    for t in range(1, len(ids)):
        if t == pos:
            out.append(None)
            continue
        e = t if t < pos else t + img.shape[0] - 1
        out.append(lp[e - 1, ids[t]].item())
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--expected")
    ap.add_argument("--ids")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    m, c, img_token = build(a.model)
    if a.expected:
        e = json.load(open(a.expected))
        ids = e["ids"]
        pixels = torch.tensor(e["pixels"], dtype=torch.float32).reshape(3, e["image_size"], e["image_size"])
    else:
        ids = [int(x) for x in (a.ids or f"1,{img_token},5,6,7").split(",")]
        pixels = torch.randn(3, c["image_size"], c["image_size"], generator=torch.Generator().manual_seed(a.seed))
    lp = logprobs(m, img_token, ids, pixels)
    if not a.expected:
        print(json.dumps({"ids": ids, "logp": lp}))
        return
    worst = max(abs(x - y) for x, y in zip(lp, e["logp"]) if x is not None)
    print(f"peer vs expected: max |diff| {worst:.3g} over {sum(x is not None for x in lp)} tokens")
    sys.exit(0 if worst <= 1e-4 else 1)


if __name__ == "__main__":
    main()
