"""Read a cubin's SASS: its loops, the source loop each one is, and what an iteration issues.

``nvdisasm -c -gi`` prints every instruction with its address and, from the line info Triton
emits, the source line and the chain of inlined calls that led to it. A loop is a backward
predicated branch (``@P BRA`` to a lower address; Triton's loops compile to do-while form):
its body is the address range from the branch target to the branch. An unconditional backward
branch before the kernel's last EXIT closes a loop left in while form; the ones after it
return from the out-of-line divergence stubs (``BRA.DIV`` fallbacks): not loops. Innermost loops are the hot loops.

For each loop, the back edge's line is the ``for`` / ``while`` of the source; its ``range``
step is resolved through the inlined calls to the kernel's constexprs, so the report can say
how many elements (tokens, hidden columns, KV tokens) one iteration covers. Counts are
static: one iteration issues every instruction of its body once per warp, except code that a
forward branch inside the body skips (``forward_branches`` says when there is any).
"""

from __future__ import annotations

import ast
import functools
import os
import re
import subprocess
from dataclasses import dataclass

_LOCATION = re.compile(r'File "([^"]+)", line (\d+)')
_INSTRUCTION = re.compile(r"/\*([0-9a-f]{4,})\*/\s+(.*?)\s*;")
_LABEL = re.compile(r"^(\.L_x_\d+):")
_TARGET = re.compile(r"`\((\.L_x_\d+)\)")


@dataclass(slots=True)
class Instruction:
    address: int
    predicated: bool
    opcode: str  # with modifiers, e.g. LDG.E.128
    text: str
    frames: tuple[tuple[str, int], ...]  # (file, line), innermost first
    target: str | None = None


def disassemble(cubin_path: str) -> list[Instruction]:
    from triton import knobs

    out = subprocess.run([knobs.nvidia.nvdisasm.path, "-c", "-gi", cubin_path], capture_output=True,
                         text=True, check=True).stdout
    return parse_listing(out)


def parse_listing(listing: str) -> list[Instruction]:
    instructions: list[Instruction] = []
    labels: dict[str, int] = {}
    pending_labels: list[str] = []
    frames: tuple[tuple[str, int], ...] = ()
    chain: list[tuple[str, int]] = []
    for line in listing.splitlines():
        stripped = line.strip()
        if stripped.startswith("//##"):
            chain.append(_first_location(stripped))  # innermost first, one frame per line
            continue
        if chain:
            frames, chain = tuple(chain), []
        label = _LABEL.match(stripped)
        if label:
            pending_labels.append(label.group(1))
            continue
        match = _INSTRUCTION.search(line)
        if not match:
            continue
        address, text = int(match.group(1), 16), match.group(2)
        predicated = text.startswith("@")
        body = text.split(None, 1)[1] if predicated else text
        opcode = body.split(None, 1)[0]
        target = _TARGET.search(body)
        instructions.append(Instruction(address, predicated, opcode, body, frames,
                                        target.group(1) if target else None))
        for name in pending_labels:
            labels[name] = address
        pending_labels = []
    for ins in instructions:
        if ins.target is not None:
            ins.target = labels.get(ins.target, ins.target)
    return instructions


def _first_location(comment: str) -> tuple[str, int]:
    match = _LOCATION.search(comment)
    return (match.group(1), int(match.group(2))) if match else ("?", 0)


# -- loops --------------------------------------------------------------------------------

@dataclass(slots=True)
class Loop:
    start: int  # address of the first body instruction (the back edge's target)
    end: int  # address of the back edge
    back_edge: Instruction
    depth: int = 0
    inner: bool = True


def find_loops(instructions: list[Instruction]) -> list[Loop]:
    # A loop LLVM left in while form (test at the top) closes with an unconditional backward
    # branch; inside the kernel's code (before its last EXIT) that is a loop too. After the
    # last EXIT come the divergence stubs and the padding self-loop: never loops.
    last_exit = max((ins.address for ins in instructions if ins.opcode.startswith("EXIT")), default=-1)
    by_start: dict[int, Loop] = {}
    for ins in instructions:
        if (ins.opcode == "BRA" and isinstance(ins.target, int) and ins.target <= ins.address
                and (ins.predicated or ins.target < ins.address < last_exit)):
            loop = by_start.get(ins.target)
            if loop is None or ins.address > loop.end:
                by_start[ins.target] = Loop(ins.target, ins.address, ins)
    loops = sorted(by_start.values(), key=lambda lp: (lp.start, -lp.end))
    for loop in loops:
        outer = [o for o in loops if o is not loop and o.start <= loop.start and loop.end <= o.end]
        loop.depth = len(outer)
        for o in outer:
            o.inner = False
    return loops


# -- source ---------------------------------------------------------------------------------

def _is_library(path: str) -> bool:
    """Triton's own language modules (reductions, helpers) as opposed to the kernel source."""
    import triton

    return os.path.abspath(path).startswith(os.path.dirname(os.path.abspath(triton.__file__)))


@functools.cache
def _module_ast(path: str) -> ast.Module | None:
    try:
        with open(path) as source:
            return ast.parse(source.read())
    except (OSError, SyntaxError):
        return None


def _innermost(tree: ast.AST, line: int, kinds: tuple[type, ...]) -> ast.AST | None:
    best = None
    for node in ast.walk(tree):
        if isinstance(node, kinds) and node.lineno <= line <= (node.end_lineno or node.lineno):
            if best is None or node.lineno >= best.lineno:
                best = node
    return best


def _source_line(path: str, line: int) -> str:
    try:
        with open(path) as source:
            return source.read().splitlines()[line - 1].strip()
    except (OSError, IndexError):
        return ""


def _parameter_value(name: str, frames: list[tuple[str, int]], level: int, kernel, constexprs: dict):
    """The compile-time value of ``name`` in the function of ``frames[level]``: the kernel's
    constexpr, or, for an inlined helper, the argument its caller passed (recursively)."""
    path, line = frames[level]
    tree = _module_ast(path)
    function = _innermost(tree, line, (ast.FunctionDef,)) if tree else None
    if function is None:
        return None
    params = [a.arg for a in function.args.args]
    if name not in params:
        return None
    if function.name == kernel.__name__:
        index = kernel.arg_names.index(name) if name in kernel.arg_names else None
        value = constexprs.get((index,)) if index is not None else None
        return value if isinstance(value, int) else None
    if level + 1 < len(frames):  # the inlined-at chain names the call
        caller_path, caller_line = frames[level + 1]
        calls = [(caller_path, node, frames[level + 1:]) for node in _calls_to(caller_path, function.name)
                 if node.lineno <= caller_line <= (node.end_lineno or node.lineno)]
    else:  # no chain (Triton 3.6 emits none): every call of the helper in its module must agree
        calls = [(path, node, [(path, node.lineno)]) for node in _calls_to(path, function.name)]
    values = {_value(_argument(node, name, params.index(name)), outer, 0, kernel, constexprs)
              for _, node, outer in calls}
    return values.pop() if len(values) == 1 else None


def _calls_to(path: str, name: str) -> list[ast.Call]:
    tree = _module_ast(path)
    return [node for node in ast.walk(tree) if isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
            and node.func.id == name] if tree else []


def _argument(call: ast.Call, name: str, position: int):
    keyword = next((k.value for k in call.keywords if k.arg == name), None)
    return keyword if keyword is not None or position >= len(call.args) else call.args[position]


def _value(expr, frames, level, kernel, constexprs):
    if isinstance(expr, ast.Constant) and isinstance(expr.value, int):
        return expr.value
    if isinstance(expr, ast.Name):
        return _parameter_value(expr.id, frames, level, kernel, constexprs)
    return None


def describe_loop(loop: Loop, kernel, constexprs: dict) -> dict:
    """Where a SASS loop comes from: the source loop, its function, and its range step."""
    frames = [f for f in loop.back_edge.frames if not _is_library(f[0])]
    if not frames:
        return dict(source="?", function="?", header="", step=None, call_line=None)
    path, line = frames[0]
    tree = _module_ast(path)
    node = _innermost(tree, line, (ast.For, ast.While)) if tree else None
    function = _innermost(tree, line, (ast.FunctionDef,)) if tree else None
    header_line = node.lineno if node is not None else line
    step = None
    if isinstance(node, ast.For) and isinstance(node.iter, ast.Call) and getattr(node.iter.func, "id", "") in (
            "range", "static_range"):
        args = node.iter.args
        step = 1 if len(args) < 3 else _value(args[2], frames, 0, kernel, constexprs)
    return dict(
        source=f"{os.path.basename(path)}:{header_line}",
        function=function.name if function is not None else "?",
        header=_source_line(path, header_line),
        step=step,
        call_line=_source_line(*frames[1]) if len(frames) > 1 else None,
    )


# -- counting -------------------------------------------------------------------------------

def memory_width(opcode: str) -> int:
    """Bits moved per thread by a load/store opcode."""
    for width in (128, 64):
        if f".{width}" in opcode:
            return width
    if re.search(r"\.[US]16\b", opcode):
        return 16
    if re.search(r"\.[US]8\b", opcode):
        return 8
    return 32


def _kind(opcode: str) -> str | None:
    base = opcode.split(".", 1)[0]
    return {"LDG": "global_loads", "LDGSTS": "global_loads", "STG": "global_stores", "LDS": "shared_loads",
            "LDSM": "shared_loads", "STS": "shared_stores", "RED": "atomics", "ATOM": "atomics",
            "ATOMG": "atomics", "REDG": "atomics", "LDL": "local_loads", "STL": "local_stores"}.get(base)


def count(instructions: list[Instruction]) -> dict:
    """Memory instructions by kind and width ({"global_loads": {"128": 4}, ...}), MMA counts."""
    out: dict = {}
    for ins in instructions:
        kind = _kind(ins.opcode)
        if kind is not None:
            widths = out.setdefault(kind, {})
            width = str(memory_width(ins.opcode))
            widths[width] = widths.get(width, 0) + 1
    base = [ins.opcode.split(".", 1)[0] for ins in instructions]
    out["wgmma"] = base.count("HGMMA") + base.count("QGMMA") + base.count("IGMMA")
    out["mma"] = base.count("HMMA")
    out["tma_loads"] = base.count("UTMALDG")
    return out


def summarise(instructions: list[Instruction], kernel, constexprs: dict, num_warps: int) -> dict:
    """The SASS facts of one build: totals, and per loop (innermost ones are the hot loops)
    the static instruction count of an iteration, warp-instructions per element of its range
    step, and its memory instructions by width."""
    loops = find_loops(instructions)
    in_loop = set()
    described = []
    for loop in loops:
        body = [ins for ins in instructions if loop.start <= ins.address <= loop.end]
        in_loop.update(ins.address for ins in body)
        nested = [o for o in loops if o is not loop and loop.start <= o.start and o.end <= loop.end]
        own = sum(1 for ins in body if not any(o.start <= ins.address <= o.end for o in nested))
        info = describe_loop(loop, kernel, constexprs)
        forward = sum(1 for ins in body if ins.opcode == "BRA" and isinstance(ins.target, int)
                      and ins.target > ins.address)
        per_element = None if not info["step"] else len(body) * num_warps / info["step"]
        described.append(dict(info, depth=loop.depth, inner=loop.inner, instructions=len(body), own_instructions=own,
                              warp_instructions=len(body) * num_warps, per_element=per_element,
                              forward_branches=forward, **count(body)))
    # Outside the loops, by the kernel's own source line (the outermost inlined frame): a model
    # can then count only the branch a kind of row takes (bench/_roofline.py, mix_sample).
    outside_lines: dict[str, int] = {}
    for ins in instructions:
        if ins.address not in in_loop:
            line = str(ins.frames[-1][1]) if ins.frames else "?"
            outside_lines[line] = outside_lines.get(line, 0) + 1
    return dict(instructions=len(instructions), outside_loops=len(instructions) - len(in_loop),
                outside_lines=outside_lines, loops=described, **count(instructions))
