"""generate_pairs: seeds from (seed, image content, role), chosen = lower h, results that do
not depend on chunking, and unreadable images that fail only their own pair."""

from pathlib import Path

import numpy as np
import pytest
from judgefree.testing.material import PROMPT
from judgefree.engine import SamplingParams
from judgefree.generation.hdist import HDistribution
from judgefree.images import image_content_hash, load_image
from judgefree.generation.pairs import assemble_pairs, build_pair_requests, derive_seed
from judgefree.engine.types import Completion
from PIL import Image


def _completion(h):
    return Completion("x", PROMPT, [1], "a", h, "length", [0.0], [0.0])


def test_seeds_and_h_depend_on_image_content_not_on_how_it_is_passed(photos, tmp_path):
    path = tmp_path / "photo.png"
    Image.fromarray(photos[0]).save(path)
    by_path = build_pair_requests([str(path)], PROMPT, "fixed:0", "uniform:0,1", SamplingParams(), 8, seed=5)
    by_array = build_pair_requests([photos[0]], PROMPT, "fixed:0", "uniform:0,1", SamplingParams(), 8, seed=5)
    assert by_path.seeds == by_array.seeds and by_path.h == by_array.h
    assert by_path.hashes == [image_content_hash(load_image(photos[0]))]
    other_run = build_pair_requests([photos[0]], PROMPT, "fixed:0", "uniform:0,1", SamplingParams(), 8, seed=6)
    assert other_run.seeds != by_path.seeds
    chosen_seed, rejected_seed = by_path.seeds[0]
    assert chosen_seed != rejected_seed
    assert by_path.h[0] == (0.0, HDistribution.parse("uniform:0,1").sample(rejected_seed))
    assert derive_seed(5, by_path.hashes[0], "rejected") == rejected_seed < 2**63


@pytest.mark.parametrize("h_pair, chosen_first", [((0.2, 0.6), True), ((0.7, 0.1), False), ((0.4, 0.4), True)])
def test_chosen_is_the_lower_h_and_ties_go_to_the_h_chosen_response(photos, h_pair, chosen_first):
    plan = build_pair_requests([photos[0]], PROMPT, h_pair[0], h_pair[1], SamplingParams(), 8, seed=0)
    first, second = _completion(h_pair[0]), _completion(h_pair[1])
    pair = assemble_pairs(plan, [first, second])[0]
    assert (pair.chosen is first) == chosen_first and (pair.rejected is second) == chosen_first


def test_bad_arguments_are_rejected(photos):
    with pytest.raises(ValueError, match="prompt"):
        build_pair_requests([photos[0]], " ", 0.0, 0.5, SamplingParams(), 8, 0)
    with pytest.raises(ValueError, match="images"):
        build_pair_requests("photo.jpg", PROMPT, 0.0, 0.5, SamplingParams(), 8, 0)
    with pytest.raises(ValueError, match="h distribution"):
        build_pair_requests([photos[0]], PROMPT, "beta:1,2", 0.5, SamplingParams(), 8, 0)


def test_pairs_do_not_depend_on_chunking_and_bad_images_fail_alone(llava_engine, photos, tmp_path):
    paths = []
    for i, photo in enumerate(photos[:3]):
        paths.append(tmp_path / f"img{i}.png")
        Image.fromarray(photo).save(paths[-1])
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG not really")
    images = [str(paths[0]), str(broken), paths[1], str(paths[2])]
    kwargs = dict(h_chosen="fixed:0", h_rejected="gaussian:0.5,0.15", max_new_tokens=5, seed=11,
                  sampling=SamplingParams(temperature=1.0, top_p=0.9))
    whole = llava_engine.generate_pairs(images, PROMPT, **kwargs)
    parts = llava_engine.generate_pairs(images[:2], PROMPT, **kwargs) + llava_engine.generate_pairs(images[2:], PROMPT, **kwargs)
    assert len(whole) == 4
    for a, b in zip(whole, parts):
        for x, y in ((a.chosen, b.chosen), (a.rejected, b.rejected)):
            assert (x.token_ids, x.h, x.seed, x.error) == (y.token_ids, y.h, y.seed, y.error)
    assert whole[1].chosen.finish_reason == whole[1].rejected.finish_reason == "error"
    assert "broken.png" in whole[1].chosen.error and whole[1].image_hash is None
    for pair, image in zip(whole, images):
        assert pair.image == str(image) and pair.prompt == PROMPT
        if pair is whole[1]:
            continue
        assert pair.chosen.h <= pair.rejected.h and pair.chosen.h == 0.0
        assert pair.chosen.error is None and len(pair.chosen.token_ids) > 0
        assert pair.chosen.prompt_token_ids == pair.rejected.prompt_token_ids  # same image, same prompt
        assert pair.image_hash == pair.chosen.image_hash == image_content_hash(load_image(image))
        assert isinstance(pair.image, str) and Path(pair.image).exists()
    assert np.isfinite(whole[0].rejected.h)
