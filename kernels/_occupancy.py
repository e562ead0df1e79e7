"""How many CTAs of a compiled kernel an SM can hold, from its registers and shared memory.

The limits are the CUDA occupancy calculator's for compute capability 9.0 (H100 / H200) and
8.0 (A100): registers are allocated per warp in units of 256 (a thread's count rounded up to a
multiple of 8), and every CTA reserves 1 KB of shared memory for the system.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class SMLimits:
    registers: int = 65536
    max_regs_per_thread: int = 255
    threads: int = 2048
    threads_per_cta: int = 1024
    ctas: int = 32
    smem: int = 228 * 1024  # per SM, with the largest carveout
    smem_per_cta: int = 227 * 1024  # the most one CTA may opt in to
    smem_reserved_per_cta: int = 1024
    reg_unit: int = 256  # registers per warp are allocated in these units


LIMITS = {90: SMLimits(), 80: SMLimits(smem=164 * 1024, smem_per_cta=163 * 1024)}


@dataclass(frozen=True, slots=True)
class Occupancy:
    fits: bool  # one CTA can launch at all
    ctas_per_sm: int
    limiter: str  # what bounds ctas_per_sm: "registers", "shared memory", "threads", "CTA slots"


def occupancy(arch: int, regs_per_thread: int, smem_bytes: int, threads_per_cta: int) -> Occupancy:
    limits = LIMITS[arch]
    warps = -(-threads_per_cta // 32)
    regs_per_warp = -(-max(regs_per_thread, 1) * 32 // limits.reg_unit) * limits.reg_unit
    bounds = {
        "registers": limits.registers // (regs_per_warp * warps),
        "shared memory": limits.smem // (smem_bytes + limits.smem_reserved_per_cta),
        "threads": limits.threads // threads_per_cta,
        "CTA slots": limits.ctas,
    }
    fits = (regs_per_thread <= limits.max_regs_per_thread and smem_bytes <= limits.smem_per_cta
            and threads_per_cta <= limits.threads_per_cta and min(bounds.values()) >= 1)
    limiter = min(bounds, key=bounds.get)
    return Occupancy(fits, bounds[limiter] if fits else 0, limiter)
