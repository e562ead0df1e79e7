"""Constants shared by the engine tests (tests/engine is on sys.path under pytest)."""

from judgefree.engine.types import SamplingParams

PROMPT = "Describe the image."
LONG_PROMPT = "What objects can you see in this picture, and what colours are they? Answer in detail."
GREEDY = SamplingParams(temperature=0.0)
