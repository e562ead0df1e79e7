"""Build every shipped kernel config for a GPU architecture exactly as the JIT would, without a GPU.

Each kernel module (``*_triton.py``) lists its product-shape calls in ``build_cases()``: a
``LaunchCase`` calls the module's real launch function on stand-in CUDA tensors (a
``FakeTensorMode``; nothing is allocated or run). Every ``kernel[grid](...)`` launch it makes
is recorded and specialised by Triton's own JIT binder (``create_function_from_signature`` and
``JITFunction._pack_args``, as ``JITFunction.run`` does): pointers 16-byte aligned unless a
view's offset says otherwise, integers divisible by 16 marked ``tt.divisibility``, integers
equal to 1 turned into constants. So the build is the one a real call compiles, with the
launch's own block sizes, warps and stages. Builds with the same JIT key are compiled once.

Compiling runs Triton's pipeline and its ``ptxas -v`` (the log is kept: registers, spill
bytes, stack); the SASS is read by ``judgefree.kernels._sass``. This needs Triton without
``TRITON_INTERPRET`` (under the interpreter ``@triton.jit`` yields nothing to compile), so the
test suite and ``bench/kernel_report.py`` run it in a subprocess: ``build_in_subprocess``.

    python -m judgefree.kernels._build --arch 90 --arch 80     # one JSON object per line
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field

# The modules whose build_cases() are the shipped configs. A new kernel module adds itself here.
KERNEL_MODULES = (
    "judgefree.kernels.mix_sample_triton",
    "judgefree.kernels.linear_logprobs_triton",
    "judgefree.kernels.paged_attention_triton",
)
# The device the launchers see while recording: their SM-count heuristics (vocab splits,
# split-K) then choose what they choose on an H100 / H200 SXM (both have 132 SMs).
RECORDED_SMS = 132


@dataclass(frozen=True, slots=True)
class LaunchCase:
    """One product-shape call of a kernel module's launch function.

    ``launch`` runs inside a fake CUDA device: it creates its tensors with
    ``torch.empty(..., device="cuda")`` and calls the real launcher. ``design_ctas`` is the
    occupancy (CTAs per SM on sm_90) each kernel's design assumes, by kernel name; the build
    test fails when the compiled kernel cannot reach it. ``shape`` describes the call for the
    report and the roofline model (``bench/kernel_report.py``).
    """

    name: str
    launch: Callable[[], object]
    design_ctas: dict[str, int] = field(default_factory=dict)
    shape: dict = field(default_factory=dict)


@dataclass(slots=True)
class Launch:
    """A recorded ``kernel[grid](*args, **kwargs)``."""

    kernel: object  # the JITFunction
    args: tuple
    kwargs: dict
    grid: tuple[int, ...]


@dataclass(slots=True)
class Build:
    """A unique (kernel, JIT specialisation, options) and the cases whose launches compile to it."""

    kernel: object
    signature: dict
    constexprs: dict
    attrs: dict
    options: object  # the backend's parsed options (CUDAOptions)
    config: str
    cases: list[dict] = field(default_factory=list)  # {"case", "grid", "args", "design_ctas", "shape"}


# -- recording -------------------------------------------------------------------------------

@contextmanager
def _recording() -> Iterator[list[Launch]]:
    """Record kernel launches instead of running them, on a fake CUDA device with
    ``RECORDED_SMS`` SMs."""
    from types import SimpleNamespace

    import torch
    from torch._subclasses.fake_tensor import FakeTensorMode
    from triton.runtime.jit import JITFunction

    launches: list[Launch] = []

    def record(self, *args, grid, warmup, **kwargs):
        grid = grid(dict(zip(self.arg_names, args))) if callable(grid) else grid
        launches.append(Launch(self, args, kwargs, tuple(int(g) for g in grid)))

    properties = SimpleNamespace(multi_processor_count=RECORDED_SMS, name="H100/H200 SXM (recorded)")
    saved_run, saved_properties = JITFunction.run, torch.cuda.get_device_properties
    JITFunction.run = record
    torch.cuda.get_device_properties = lambda *a, **k: properties
    try:
        with FakeTensorMode(allow_non_fake_inputs=True):
            yield launches
    finally:
        JITFunction.run, torch.cuda.get_device_properties = saved_run, saved_properties


def record_launches(case: LaunchCase) -> list[Launch]:
    with _recording() as launches:
        case.launch()
    if not launches:
        raise RuntimeError(f"build case {case.name!r} launched no kernel")
    return launches


def _stand_in(value):
    """A real CPU tensor with the dtype and 16-byte alignment the fake tensor would have on
    the GPU (allocations are 256-byte aligned; a view is offset by its storage offset), so the
    JIT's own specialisation code sees what it sees on the device."""
    import torch

    if not isinstance(value, torch.Tensor):
        return value
    offset = (value.storage_offset() * value.element_size()) % 16
    base = torch.empty(64, dtype=torch.uint8)  # CPU allocations are 64-byte aligned
    return base[offset:offset + value.element_size()].view(value.dtype) if offset else \
        torch.empty(1, dtype=value.dtype)


def specialise(launch: Launch, target) -> tuple[dict, dict, dict, object]:
    """(signature, constexprs, attrs, options) of ``launch`` for ``target``, computed by the
    JIT's binder exactly as ``JITFunction.run`` computes them before compiling."""
    from triton import knobs
    from triton.compiler import make_backend
    from triton.runtime.jit import create_function_from_signature

    fn = launch.kernel
    backend = make_backend(target)
    args = [_stand_in(a) for a in launch.args]
    kwargs = {k: _stand_in(v) for k, v in launch.kwargs.items()}
    kwargs["debug"] = kwargs.get("debug", fn.debug) or knobs.runtime.debug
    kwargs["instrumentation_mode"] = knobs.compilation.instrumentation_mode
    binder = create_function_from_signature(fn.signature, fn.params, backend)
    bound, specialization, options = binder(*args, **kwargs)
    options, signature, constexprs, attrs = fn._pack_args(backend, kwargs, bound, specialization, options)
    return signature, constexprs, attrs, options


def _config_label(fn, signature: dict, constexprs: dict, attrs: dict, options) -> str:
    """Compile-time facts of a build in one line: constexprs, element types, integer
    arguments specialised to 1 or marked divisible by 16, warps and stages."""
    names = fn.arg_names
    consts = [f"{names[i]}={v}" for (i, *_), v in sorted(constexprs.items()) if fn.params[i].is_constexpr]
    dtypes = sorted({t[1:] for t in signature.values() if isinstance(t, str) and t.startswith("*")})
    ints = [n for n, t in signature.items() if t in ("i32", "i64")]
    divisible = [names[i] for (i, *_), a in attrs.items() if a and names[i] in ints]
    ones = [names[i] for (i, *_), v in constexprs.items() if not fn.params[i].is_constexpr and v == 1]
    parts = [" ".join(consts), "ptrs " + "/".join(dtypes)]
    if divisible:
        parts.append("div16 " + ",".join(divisible))
    if ones:
        parts.append("=1 " + ",".join(ones))
    parts.append(f"w{options.num_warps} s{options.num_stages}")
    return " | ".join(parts)


def _jsonable(value):
    if isinstance(value, (bool, int, float, str)) or value is None:
        return value
    return repr(value)


def apply_overrides(overrides: dict[str, object]) -> None:
    """Set module globals before recording, to build a config that is not (or no longer)
    shipped: ``{"judgefree.kernels.mix_sample_triton.GPU_BLOCK": 4096}``; a dataclass field
    of a global is named by one more dot (``...linear_logprobs_triton.GPU_CONFIG.block_h``)."""
    import dataclasses
    import importlib

    for path, value in overrides.items():
        parts = path.split(".")
        for split in (len(parts) - 1, len(parts) - 2):
            module_name, names = ".".join(parts[:split]), parts[split:]
            try:
                module = importlib.import_module(module_name)
            except ImportError:
                continue
            if not hasattr(module, names[0]):
                raise ValueError(f"{module_name} has no {names[0]} to override")
            if len(names) == 1:
                setattr(module, names[0], value)
            else:
                setattr(module, names[0], dataclasses.replace(getattr(module, names[0]), **{names[1]: value}))
            break
        else:
            raise ValueError(f"cannot resolve the override {path!r} to a module global")


def collect_builds(target, modules: tuple[str, ...] = KERNEL_MODULES, case_filter: str | None = None) -> list[Build]:
    """Every unique build the modules' cases launch, in first-seen order (only cases whose
    name contains ``case_filter``, when given)."""
    import importlib

    builds: dict[str, Build] = {}
    for module_name in modules:
        module = importlib.import_module(module_name)
        for case in module.build_cases():
            if case_filter and case_filter not in case.name:
                continue
            for launch in record_launches(case):
                signature, constexprs, attrs, options = specialise(launch, target)
                fn = launch.kernel
                key = json.dumps([fn.__module__, fn.__name__, signature,
                                  sorted((list(k), _jsonable(v)) for k, v in constexprs.items()),
                                  sorted((list(k), v) for k, v in attrs.items()), repr(options)])
                if key not in builds:
                    builds[key] = Build(fn, signature, constexprs, attrs, options,
                                        _config_label(fn, signature, constexprs, attrs, options))
                scalars = {name: value for name, value in zip(fn.arg_names, launch.args)
                           if isinstance(value, (int, float)) and not isinstance(value, bool)}
                scalars.update({k: v for k, v in launch.kwargs.items() if isinstance(v, (int, float, bool, str))})
                builds[key].cases.append(dict(case=case.name, grid=list(launch.grid), args=scalars,
                                              design_ctas=case.design_ctas.get(fn.__name__, 1),
                                              shape=case.shape))
    return list(builds.values())


# -- compiling -------------------------------------------------------------------------------

_PTXAS_PROPERTIES = re.compile(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads")
_PTXAS_USED = re.compile(r"Used (\d+) registers")


@dataclass(slots=True)
class PtxasFacts:
    regs: int
    spill_stores: int
    spill_loads: int
    stack: int
    warnings: list[str]


def parse_ptxas_log(log: str, kernel_name: str) -> PtxasFacts:
    """Registers, spill bytes and stack frame of ``kernel_name`` from ``ptxas -v``'s log."""
    section = log[log.find(f"Function properties for {kernel_name}"):]
    properties, used = _PTXAS_PROPERTIES.search(section), _PTXAS_USED.search(section)
    if properties is None or used is None:
        raise RuntimeError(f"no ptxas -v figures for {kernel_name} in the log:\n{log[-2000:]}")
    warnings = sorted({line.split("warning :", 1)[1].strip() for line in log.splitlines() if "ptxas warning" in line})
    stack, stores, loads = (int(g) for g in properties.groups())
    return PtxasFacts(int(used.group(1)), stores, loads, stack, warnings)


def compile_build(build: Build, target) -> tuple[PtxasFacts, int, bytes]:
    """Compile ``build`` for ``target``: (ptxas facts, shared memory bytes, cubin)."""
    import contextlib
    import io

    import triton
    from triton.compiler import ASTSource

    log = io.StringIO()
    source = ASTSource(build.kernel, build.signature, build.constexprs, build.attrs)
    with contextlib.redirect_stdout(log):  # TRITON_DUMP_PTXAS_LOG: Triton prints ptxas' log
        compiled = triton.compile(source, target=target, options=build.options.__dict__)
    return parse_ptxas_log(log.getvalue(), build.kernel.__name__), compiled.metadata.shared, compiled.asm["cubin"]


def analyse(build: Build, arch: int, facts: PtxasFacts, smem: int, cubin: bytes, workdir: str) -> dict:
    """One JSON-able record: what ptxas and the SASS say about ``build``."""
    from judgefree.kernels._occupancy import occupancy
    from judgefree.kernels._sass import disassemble, summarise

    name = build.kernel.__name__
    path = os.path.join(workdir, f"{name}-{abs(hash(build.config)):x}-sm{arch}.cubin")
    with open(path, "wb") as out:
        out.write(cubin)
    num_warps = build.options.num_warps
    occ = occupancy(arch, facts.regs, smem, num_warps * 32)
    sass = summarise(disassemble(path), build.kernel, build.constexprs, num_warps)
    return dict(
        kernel=name, module=build.kernel.__module__, config=build.config, arch=f"sm_{arch}{'a' if arch == 90 else ''}",
        num_warps=num_warps, num_stages=build.options.num_stages,
        regs=facts.regs, spill_stores=facts.spill_stores, spill_loads=facts.spill_loads, stack=facts.stack,
        smem_bytes=smem, fits=occ.fits, ctas_per_sm=occ.ctas_per_sm, occupancy_limit=occ.limiter,
        warps_per_sm=occ.ctas_per_sm * num_warps,
        design_ctas=max(c["design_ctas"] for c in build.cases),
        ptxas_warnings=facts.warnings, cases=build.cases, **sass,
    )


def plan_record(build: Build, arch: int) -> dict:
    """What is known of ``build`` without compiling it: its JIT specialisation and its cases."""
    return dict(kernel=build.kernel.__name__, module=build.kernel.__module__, config=build.config,
                arch=f"sm_{arch}{'a' if arch == 90 else ''}", num_warps=build.options.num_warps,
                num_stages=build.options.num_stages, design_ctas=max(c["design_ctas"] for c in build.cases),
                cases=build.cases)


SUBSETS = ("all", "representative")


def run(arches: list[int], shard: tuple[int, int] = (0, 1), kernels: list[str] | None = None,
        case_filter: str | None = None, overrides: dict | None = None, subset: str = "all") -> Iterator[dict]:
    """Build and analyse the shipped configs for each arch (this process must not be
    interpreting Triton); yields one record per build, ``compiled`` saying whether it was.

    ``subset="all"`` compiles every build; ``"representative"`` compiles the builds
    ``judgefree.kernels._build_selection`` selects and yields the others uncompiled (their
    specialisation only, from shard 0), each compiled one naming its family's size."""
    from triton.backends.compiler import GPUTarget

    from judgefree.kernels._build_selection import family_key, family_sizes, representatives

    if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
        raise RuntimeError("building for a GPU needs Triton's compiler: unset TRITON_INTERPRET")
    if subset not in SUBSETS:
        raise ValueError(f"subset must be one of {SUBSETS}, got {subset!r}")
    apply_overrides(overrides or {})
    index, count = shard
    with tempfile.TemporaryDirectory(prefix="judgefree-build-") as workdir:
        n = 0  # compiled builds so far, over all arches: the shards split these
        offset = 0  # build_index counts the builds of every arch, in order
        for arch in arches:
            target = GPUTarget("cuda", arch, 32)
            builds = [b for b in collect_builds(target, case_filter=case_filter)
                      if not kernels or b.kernel.__name__ in kernels]
            chosen = set(range(len(builds))) if subset == "all" else set(representatives(builds))
            families = family_sizes(builds)
            for i, build in enumerate(builds):
                if i not in chosen:
                    if index == 0:
                        yield dict(plan_record(build, arch), compiled=False, build_index=offset + i,
                                   family=repr(family_key(build)))
                    continue
                n += 1
                if (n - 1) % count != index:
                    continue
                facts, smem, cubin = compile_build(build, target)
                yield dict(analyse(build, arch, facts, smem, cubin, workdir), compiled=True, build_index=offset + i,
                           family=repr(family_key(build)), family_builds=families[family_key(build)])
            offset += len(builds)


def _worker_env(cache_dir: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    # A fresh cache and always compiling: ptxas then runs (and logs) for every build.
    env.update(TRITON_CACHE_DIR=cache_dir, TRITON_ALWAYS_COMPILE="1", TRITON_DUMP_PTXAS_LOG="1")
    return env


def build_in_subprocess(arches: list[int], *, jobs: int = 1, kernels: list[str] | None = None,
                        case_filter: str | None = None, overrides: dict | None = None,
                        subset: str = "all", timeout: float = 900) -> list[dict]:
    """``run`` in ``jobs`` fresh interpreters without TRITON_INTERPRET (shards of the build
    list); the records of every build, in a stable order."""
    args = [a for arch in arches for a in ("--arch", str(arch))] + ["--subset", subset]
    args += [a for k in kernels or [] for a in ("--kernel", k)]
    args += ["--case", case_filter] if case_filter else []
    args += [a for k, v in (overrides or {}).items() for a in ("--set", f"{k}={v!r}")]
    with tempfile.TemporaryDirectory(prefix="judgefree-triton-cache-") as cache:
        procs = [subprocess.Popen([sys.executable, "-m", "judgefree.kernels._build", *args, "--shard", f"{i}/{jobs}"],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                  env=_worker_env(os.path.join(cache, str(i))))
                 for i in range(jobs)]
        records = []
        for proc in procs:
            out, err = proc.communicate(timeout=timeout)
            if proc.returncode != 0:
                raise RuntimeError(f"building the kernels for the GPU failed:\n{err[-6000:]}")
            records += [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    return sorted(records, key=lambda r: r["build_index"])


def parse_override(text: str) -> tuple[str, object]:
    """``module.NAME=literal`` (a Python literal: numbers, strings, tuples; never code)."""
    import ast

    name, sep, value = text.partition("=")
    if not sep:
        raise ValueError(f"an override is module.NAME=value, got {text!r}")
    try:
        return name.strip(), ast.literal_eval(value.strip())
    except (ValueError, SyntaxError):
        raise ValueError(f"the value of override {name!r} must be a Python literal, got {value!r}") from None


def main(argv: list[str] | None = None) -> None:
    import argparse

    parser = argparse.ArgumentParser(description="build the shipped kernel configs for a GPU (JSON lines)")
    parser.add_argument("--arch", type=int, action="append", help="compute capability, e.g. 90 (default) or 80")
    parser.add_argument("--kernel", action="append", help="only these kernels (by function name)")
    parser.add_argument("--case", help="only the cases whose name contains this")
    parser.add_argument("--set", action="append", default=[], metavar="MODULE.NAME=VALUE",
                        help="override a launch setting before recording (e.g. a block size)")
    parser.add_argument("--shard", default="0/1", help="i/n: build every n-th config starting at i")
    parser.add_argument("--subset", choices=SUBSETS, default="all",
                        help="compile every build, or one per code path (kernels/_build_selection.py)")
    args = parser.parse_args(argv)
    # Run directly, too, every build must compile (not come from Triton's cache) and print
    # ptxas' log, which the records are read from: what build_in_subprocess's workers get.
    os.environ.setdefault("TRITON_DUMP_PTXAS_LOG", "1")
    os.environ.setdefault("TRITON_ALWAYS_COMPILE", "1")
    index, count = (int(x) for x in args.shard.split("/"))
    overrides = dict(parse_override(text) for text in args.set)
    for record in run(args.arch or [90], (index, count), args.kernel, args.case, overrides, args.subset):
        print(json.dumps(record), flush=True)


if __name__ == "__main__":
    main()
