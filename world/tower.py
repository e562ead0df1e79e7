"""The world CLIP's image tower in the Hugging Face ``CLIPVisionModel`` layout (as llava-hf's
towers are OpenAI's CLIP image towers): the seed LLaVA sees through its own verifier's eyes,
as the paper uses the MLLM's vision encoder as the CLIP."""

from __future__ import annotations


def hf_vision_config(clip_config: dict):
    from transformers import CLIPVisionConfig

    v = clip_config["vision_cfg"]
    width = v["width"]
    return CLIPVisionConfig(hidden_size=width, intermediate_size=int(width * v.get("mlp_ratio", 4.0)),
                            num_hidden_layers=v["layers"], num_attention_heads=width // v.get("head_width", 64),
                            image_size=v["image_size"], patch_size=v["patch_size"],
                            projection_dim=clip_config["embed_dim"], hidden_act="gelu", layer_norm_eps=1e-5)


def convert_visual(state: dict, clip_config: dict) -> dict:
    """open_clip ``visual.*`` tensors -> ``CLIPVisionModel`` state dict (``vision_model.*``)."""
    layers = clip_config["vision_cfg"]["layers"]
    v = {k.removeprefix("visual."): t for k, t in state.items() if k.startswith("visual.")}
    out = {"embeddings.class_embedding": v["class_embedding"],
           "embeddings.patch_embedding.weight": v["conv1.weight"],
           "embeddings.position_embedding.weight": v["positional_embedding"],
           "pre_layrnorm.weight": v["ln_pre.weight"], "pre_layrnorm.bias": v["ln_pre.bias"],
           "post_layernorm.weight": v["ln_post.weight"], "post_layernorm.bias": v["ln_post.bias"]}
    for i in range(layers):
        src, dst = f"transformer.resblocks.{i}.", f"encoder.layers.{i}."
        q, k, val = v[src + "attn.in_proj_weight"].chunk(3)
        qb, kb, vb = v[src + "attn.in_proj_bias"].chunk(3)
        out.update({dst + "self_attn.q_proj.weight": q, dst + "self_attn.k_proj.weight": k,
                    dst + "self_attn.v_proj.weight": val, dst + "self_attn.q_proj.bias": qb,
                    dst + "self_attn.k_proj.bias": kb, dst + "self_attn.v_proj.bias": vb,
                    dst + "self_attn.out_proj.weight": v[src + "attn.out_proj.weight"],
                    dst + "self_attn.out_proj.bias": v[src + "attn.out_proj.bias"],
                    dst + "layer_norm1.weight": v[src + "ln_1.weight"], dst + "layer_norm1.bias": v[src + "ln_1.bias"],
                    dst + "layer_norm2.weight": v[src + "ln_2.weight"], dst + "layer_norm2.bias": v[src + "ln_2.bias"],
                    dst + "mlp.fc1.weight": v[src + "mlp.c_fc.weight"], dst + "mlp.fc1.bias": v[src + "mlp.c_fc.bias"],
                    dst + "mlp.fc2.weight": v[src + "mlp.c_proj.weight"], dst + "mlp.fc2.bias": v[src + "mlp.c_proj.bias"]})
    return {"vision_model." + k: t.clone() for k, t in out.items()}
