"""The demo checkpoint: LLaVA layout around the real SmolLM2-135M (built once into the cache)."""

import pytest
import torch
from judgefree.engine import Engine, Request, SamplingParams
from judgefree.assets.checkpoints import demo_llava_path


@pytest.mark.slow
def test_demo_llava_keeps_smollm2_weights_and_matches_transformers(smollm2_dir, photos):
    from safetensors import safe_open
    from transformers import LlavaForConditionalGeneration

    folder = demo_llava_path()
    with safe_open(str(smollm2_dir / "model.safetensors"), "pt") as source, \
            safe_open(str(folder / "model.safetensors"), "pt") as demo:
        name = "model.layers.7.mlp.down_proj.weight"
        torch.testing.assert_close(demo.get_tensor("language_model." + name), source.get_tensor(name))
        embed = source.get_tensor("model.embed_tokens.weight")
        torch.testing.assert_close(demo.get_tensor("language_model.model.embed_tokens.weight")[: len(embed)], embed)
    engine = Engine.from_pretrained(folder, max_model_len=512, max_kv_blocks=128)
    request = Request("Describe the image.", image=photos[1], sampling=SamplingParams(temperature=0.0),
                      max_new_tokens=8)
    completion = engine.generate([request])[0]
    assert completion.prompt_token_ids.count(engine.model.image_token_id) == (224 // 14) ** 2
    hf = LlavaForConditionalGeneration.from_pretrained(folder).eval()
    prompt = engine.prompts.build(request.prompt, request.image)
    ids = torch.tensor([prompt.cond_ids])
    expected = hf.generate(input_ids=ids, attention_mask=torch.ones_like(ids), pixel_values=prompt.pixel_values,
                           max_new_tokens=8, do_sample=False)[0, ids.shape[1]:].tolist()
    assert completion.token_ids == expected
