"""judgefree.kernels: Triton kernels, each beside its PyTorch reference.

Every op X has the same files: ``X.py`` (the public function: argument checks, backend
choice), ``X_triton.py`` (the kernels and their launch), ``X_ref.py`` (the op written
plainly in PyTorch: its definition, what every test compares with) and, where the plain
version is too slow or too large for the CPU path, ``X_torch.py`` (the PyTorch path that runs
where Triton does not; tested against ``X_ref`` too). The CPU path is ``X_torch`` when it
exists, else ``X_ref``.

- ``mix_sample``: two-path mix + top-k/top-p + exact draw (a rows x chunks statistics grid,
  then per row; rows without filters read one chunk of the logits a second time, not all).
- ``linear_logprobs``: per-token log p(target) from hidden states and the lm_head without
  materialising the [tokens, vocab] logits (DPO).
- ``store_kv`` / ``paged_decode_attention`` / ``paged_prefill_attention`` (checked) and
  ``paged_attention_ops`` (chosen once, unchecked): attention over a paged, prefix-shared
  KV cache.
"""

if __name__ == "kernels":  # this folder reached as a top-level package from the repository root
    from judgefree._shadowing import use_installed_package

    use_installed_package(__name__, __file__)  # Hugging Face's `kernels`, which transformers imports
else:
    from judgefree._lazy import lazy_exports

    __getattr__, __dir__, __all__ = lazy_exports(__name__, {
        "mix_sample": ("MixSample", "mix_sample"),
        "linear_logprobs": ("linear_logprobs",),
        "paged_attention": ("store_kv", "paged_decode_attention", "paged_prefill_attention",
            "paged_attention_ops"),
    })
