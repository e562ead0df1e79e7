"""Ahead-of-time compilation of a Triton kernel for a GPU architecture, without a GPU.

The interpreter runs kernels as numpy code and cannot catch what only the compiler sees
(types, layouts, shared memory, register spills). Compiling to a cubin for sm_90 on the CPU
(Triton ships ptxas) does; the test suite and benchmarks use this.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import asdict, dataclass


@dataclass(frozen=True, slots=True)
class CompileReport:
    shared_bytes: int
    local_memory_ops: int  # ld/st.local in the PTX: spills or stack arrays
    uses_wgmma: bool

    def __str__(self) -> str:
        return (f"smem {self.shared_bytes} B, local ld/st {self.local_memory_ops}, "
                f"{'wgmma' if self.uses_wgmma else 'no wgmma'}")


def compile_for_gpu(kernel, arg_types: dict[str, str], constexprs: dict, *, arch: int = 90,
                    num_warps: int = 4, num_stages: int = 3) -> CompileReport:
    """Compile ``kernel`` (a ``@triton.jit`` function) for ``arch``.

    ``arg_types`` maps each runtime argument to a Triton type string ("*bf16", "i32",
    "fp32", ...); pointers are assumed 16-byte aligned as the JIT sees torch tensors.
    """
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    names = kernel.arg_names
    missing = [n for n in names if n not in arg_types and n not in constexprs]
    if missing:
        raise ValueError(f"no type given for kernel arguments {missing}")
    signature = {n: "constexpr" if n in constexprs else arg_types[n] for n in names}
    constants = {(names.index(n),): v for n, v in constexprs.items()}
    aligned = {(i,): [["tt.divisibility", 16]] for i, n in enumerate(names)
               if signature[n].startswith("*")}
    source = ASTSource(kernel, signature, constants, aligned)
    compiled = triton.compile(source, target=GPUTarget("cuda", arch, 32),
                              options={"num_warps": num_warps, "num_stages": num_stages})
    ptx = compiled.asm["ptx"]
    return CompileReport(compiled.metadata.shared, len(re.findall(r"\b(?:ld|st)\.local", ptx)), "wgmma" in ptx)


def signature(kernel, constexprs: dict, pointers: dict[str, str], floats: tuple[str, ...] = ()) -> dict[str, str]:
    """Argument types for ``kernel``: each pointer (``*_ptr``) typed in ``pointers``, the
    arguments named in ``floats`` fp32, every other runtime argument (sizes, strides) i32."""
    types = {}
    for name in kernel.arg_names:
        if name in constexprs:
            continue
        if name.endswith("_ptr"):
            if name not in pointers:
                raise ValueError(f"no pointer type given for {name}")
            types[name] = pointers[name]
        else:
            types[name] = "fp32" if name in floats else "i32"
    return types


def compile_in_subprocess(module: str, kernel: str, arg_types: dict[str, str], constexprs: dict,
                          **options) -> CompileReport:
    """``compile_for_gpu`` on ``module.kernel`` in a fresh interpreter without
    TRITON_INTERPRET (under the interpreter ``@triton.jit`` yields nothing to compile)."""
    request = json.dumps(dict(module=module, kernel=kernel, arg_types=arg_types,
                              constexprs=constexprs, options=options))
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    done = subprocess.run([sys.executable, "-m", "judgefree.kernels._aot"], input=request,
                          capture_output=True, text=True, env=env, timeout=600)
    if done.returncode != 0:
        raise RuntimeError(f"compiling {module}.{kernel} for the GPU failed:\n{done.stderr[-4000:]}")
    return CompileReport(**json.loads(done.stdout.strip().splitlines()[-1]))


if __name__ == "__main__":
    import importlib

    job = json.loads(sys.stdin.read())
    fn = getattr(importlib.import_module(job["module"]), job["kernel"])
    report = compile_for_gpu(fn, job["arg_types"], job["constexprs"], **job["options"])
    print(json.dumps(asdict(report)))
