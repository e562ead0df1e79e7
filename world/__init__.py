"""The world: procedural scenes with exact truth, their captions, the hallucination metric
against that truth, and the CLIP + seed LLaVA trained on it (``judgefree world build``).
See docs/world.md."""
