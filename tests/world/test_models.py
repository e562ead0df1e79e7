"""The world's model pieces without training: the open_clip -> HF CLIPVisionModel tower
conversion (against open_clip's own forward), the world tokenizer, and the CLIP's hard
negatives (false of their scene by the exact-truth metric)."""

import numpy as np
import pytest
import torch

from judgefree.world.clip import CLIP_NAME, clip_pixels, hard_negative, positive_sentence, write_config
from judgefree.world.grammar import caption
from judgefree.world.metric import score
from judgefree.world.render import render
from judgefree.world.scenes import scenes
from judgefree.world.tokenizer import build_tokenizer
from judgefree.world.tower import convert_visual, hf_vision_config


def test_converted_tower_computes_what_open_clip_computes(tmp_path):
    import open_clip
    from transformers import CLIPVisionModel

    config_path = write_config(tmp_path, 72)
    open_clip.add_model_config(config_path)
    torch.manual_seed(3)
    clip = open_clip.create_model(CLIP_NAME).eval()
    with torch.no_grad():  # non-trivial norms and biases, so that a swapped tensor shows
        for name, p in clip.visual.named_parameters():
            p.add_(torch.randn_like(p) * 0.05)
    import json
    cfg = json.loads(config_path.read_text())
    tower = CLIPVisionModel(hf_vision_config(cfg)).eval()
    state = convert_visual(clip.state_dict(), cfg)
    target_keys = set(tower.state_dict())
    if not any(k.startswith("vision_model.") for k in target_keys):
        state = {k.removeprefix("vision_model."): t for k, t in state.items()}
    result = tower.load_state_dict(state, strict=False)
    assert not result.unexpected_keys and all("position_ids" in k for k in result.missing_keys)
    pixels = clip_pixels([render(s) for s in scenes("eval", 3)], 72)
    with torch.no_grad():
        expected = clip.encode_image(pixels)
        got = tower(pixels).pooler_output @ clip.visual.proj
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)


def test_tokenizer_round_trips_captions_and_renders_the_llava_prompt():
    tokenizer = build_tokenizer()
    for s in scenes("train", 50):
        text = caption(s)
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        assert tokenizer.unk_token_id not in ids
        assert tokenizer.decode(ids).replace(" .", ".").replace(" ,", ",") == text.replace(" .", ".").replace(" ,", ",")
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Describe this image."}]}],
        add_generation_prompt=True, tokenize=False)
    assert prompt == "USER: <image>\nDescribe this image. ASSISTANT:"
    assert tokenizer.unk_token_id not in tokenizer(prompt)["input_ids"]


def test_hard_negatives_are_false_and_positives_true_of_their_scene():
    rng = np.random.default_rng(0)
    for s in scenes("train", 200):
        neg = score(hard_negative(s, rng), s)
        assert neg.hallucinated + neg.wrong_colour >= 1
        pos = score(positive_sentence(s, rng), s)
        assert pos.hallucinated == 0 and pos.wrong_colour == 0


@pytest.mark.parametrize("size", [23, 10])
def test_render_refuses_tiny_pictures(size):
    from judgefree.world.render import render as draw

    with pytest.raises(ValueError, match="image size"):
        draw(scenes("eval", 1)[0], size)
