"""CTAs per SM from registers, shared memory and threads, against values worked out by hand
from the CUDA occupancy rules (compute capability 9.0 and 8.0)."""

import pytest

from judgefree.kernels._occupancy import occupancy


@pytest.mark.parametrize("arch, regs, smem, threads, ctas, limiter", [
    (90, 128, 0, 256, 2, "registers"),  # 128 x 32 x 8 warps = 32768 registers per CTA
    (90, 255, 0, 256, 1, "registers"),  # 255 rounds to 256 per thread: 65536 per CTA
    (90, 155, 2048, 128, 3, "registers"),  # 160 x 32 = 5120 per warp, 20480 per CTA
    (90, 64, 0, 1024, 1, "registers"),
    (90, 40, 100 * 1024, 128, 2, "shared memory"),  # (100 + 1 reserved) KB into 228 KB
    (80, 40, 100 * 1024, 128, 1, "shared memory"),  # into A100's 164 KB
    (90, 16, 0, 32, 32, "CTA slots"),
    (90, 24, 0, 512, 4, "threads"),
])
def test_ctas_per_sm(arch, regs, smem, threads, ctas, limiter):
    result = occupancy(arch, regs, smem, threads)
    assert result.fits and (result.ctas_per_sm, result.limiter) == (ctas, limiter)


@pytest.mark.parametrize("regs, smem, threads", [(32, 228 * 1024, 128), (256, 0, 128), (32, 0, 2048)])
def test_a_cta_over_the_limits_does_not_fit(regs, smem, threads):
    result = occupancy(90, regs, smem, threads)
    assert not result.fits and result.ctas_per_sm == 0
