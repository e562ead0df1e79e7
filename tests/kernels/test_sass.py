"""The SASS reader on a hand-written nvdisasm listing (``-c -gi`` format) of known structure:
which branches are loops, their nesting, the source loop each one is, its range step resolved
through an inlined helper's call, and the memory instruction widths."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from judgefree.kernels._sass import find_loops, memory_width, parse_listing, summarise

SOURCE = '''def helper(ptr, n, STEP):
    for i in range(0, n, STEP):
        pass


def kernel(x_ptr, V, BLOCK, SEARCH):
    for start in range(0, V, BLOCK):
        pass
    helper(x_ptr, V, SEARCH)
    while V > 0:
        V -= 1
'''


def _listing(path: str) -> str:
    at = lambda line, inlined=None: (  # noqa: E731
        f'\t//## File "{path}", line {line}' + (f' inlined at "{path}", line {inlined}' if inlined else ""))
    return "\n".join([
        at(6),
        "        /*0000*/                   MOV R1, c[0x0][0x28] ;",
        ".L_x_0:",
        at(8),
        "        /*0010*/                   LDG.E.128 R4, desc[UR4][R2.64] ;",
        "        /*0020*/                   FADD R0, R0, R4 ;",
        at(7),
        "        /*0030*/              @P0 BRA `(.L_x_0) ;",
        ".L_x_1:",
        at(3, 9), at(9),
        "        /*0040*/                   LDG.E.64 R6, desc[UR4][R2.64] ;",
        "        /*0050*/               @P3 BRA `(.L_x_5) ;",
        "        /*0060*/                   FMUL R0, R0, R6 ;",
        ".L_x_5:",
        at(2, 9), at(9),
        "        /*0070*/              @!P1 BRA `(.L_x_1) ;",
        ".L_x_2:",
        at(11),
        "        /*0080*/                   BRA.DIV UR4, `(.L_x_4) ;",
        "        /*0090*/                   STG.E.U16 desc[UR4][R2.64], R0 ;",
        ".L_x_6:",
        at(10),
        "        /*00a0*/              @P2 BRA `(.L_x_2) ;",
        "        /*00b0*/                   EXIT ;",
        ".L_x_4:",
        "        /*00c0*/                   WARPSYNC 0xffffffff ;",
        "        /*00d0*/                   BRA `(.L_x_6) ;",  # back from the divergence stub: not a loop
        ".L_x_3:",
        "        /*00e0*/                   BRA `(.L_x_3);",  # the padding self-loop after EXIT: not a loop
    ])


@pytest.fixture
def summary(tmp_path):
    path = tmp_path / "kernels.py"
    path.write_text(SOURCE)
    kernel = SimpleNamespace(__name__="kernel", arg_names=["x_ptr", "V", "BLOCK", "SEARCH"])
    instructions = parse_listing(_listing(str(path)))
    return instructions, summarise(instructions, kernel, {(2,): 1024, (3,): 256}, num_warps=4)


def test_loops_are_the_predicated_backward_branches(summary):
    instructions, out = summary
    assert len(instructions) == 15
    loops = find_loops(instructions)
    assert [(lp.start, lp.end) for lp in loops] == [(0x10, 0x30), (0x40, 0x70), (0x80, 0xa0)]
    assert out["instructions"] == 15 and out["outside_loops"] == 15 - (3 + 4 + 3)


def test_each_loop_is_named_by_its_source_and_its_step_resolved(summary):
    _, out = summary
    first, second, third = out["loops"]
    assert (first["function"], first["header"], first["step"]) == ("kernel", "for start in range(0, V, BLOCK):", 1024)
    assert first["source"] == "kernels.py:7" and first["call_line"] is None
    # the helper's STEP is the kernel's SEARCH, through the call on line 9
    assert (second["function"], second["step"], second["call_line"]) == ("helper", 256, "helper(x_ptr, V, SEARCH)")
    assert (third["header"], third["step"], third["per_element"]) == ("while V > 0:", None, None)
    assert first["instructions"] == 3 and first["warp_instructions"] == 12
    assert first["per_element"] == pytest.approx(3 * 4 / 1024)
    assert second["forward_branches"] == 1 and first["forward_branches"] == 0


def test_memory_instructions_are_counted_by_width(summary):
    _, out = summary
    first, second, third = out["loops"]
    assert first["global_loads"] == {"128": 1} and second["global_loads"] == {"64": 1}
    assert third["global_stores"] == {"16": 1}
    assert out["global_loads"] == {"128": 1, "64": 1}
    assert [memory_width(op) for op in ("LDG.E.128", "LDG.E.64", "LDG.E", "LDG.E.U16", "LDG.E.S8", "STS.128")] \
        == [128, 64, 32, 16, 8, 128]


def test_nested_loops_count_their_own_instructions():
    listing = "\n".join([
        ".L_x_0:",
        "        /*0000*/                   IADD3 R1, R1, 0x1, RZ ;",
        ".L_x_1:",
        "        /*0010*/                   HGMMA.64x128x16.F32.BF16 R24, gdesc[UR4], R24 ;",
        "        /*0020*/              @P0 BRA `(.L_x_1) ;",
        "        /*0030*/                   FADD R0, R0, R24 ;",
        "        /*0040*/              @P1 BRA `(.L_x_0) ;",
    ])
    kernel = SimpleNamespace(__name__="k", arg_names=[])
    out = summarise(parse_listing(listing), kernel, {}, num_warps=8)
    outer, inner = out["loops"]
    assert (outer["depth"], outer["inner"], outer["instructions"], outer["own_instructions"]) == (0, False, 5, 3)
    assert (inner["depth"], inner["inner"], inner["instructions"], inner["wgmma"]) == (1, True, 2, 1)
    assert inner["function"] == "?"  # no line info: named as unknown, not guessed


@pytest.mark.parametrize("second_arg, step", [("SEARCH", 256), ("BLOCK", None)])
def test_without_inline_info_a_helpers_step_needs_all_its_calls_to_agree(tmp_path, second_arg, step):
    """Triton 3.6 emits no inlined-at chain: a helper's loop resolves only when every call passes
    the same value (here twice SEARCH; SEARCH then BLOCK is ambiguous and left unresolved)."""
    path = tmp_path / "kernels.py"
    path.write_text(SOURCE.replace("    helper(x_ptr, V, SEARCH)\n",
                                   f"    helper(x_ptr, V, SEARCH)\n    helper(x_ptr, V, {second_arg})\n"))
    listing = "\n".join([
        ".L_x_0:",
        f'\t//## File "{path}", line 3',
        "        /*0000*/                   LDG.E.64 R6, desc[UR4][R2.64] ;",
        f'\t//## File "{path}", line 2',
        "        /*0010*/              @P0 BRA `(.L_x_0) ;",
    ])
    kernel = SimpleNamespace(__name__="kernel", arg_names=["x_ptr", "V", "BLOCK", "SEARCH"])
    (loop,) = summarise(parse_listing(listing), kernel, {(2,): 1024, (3,): 256}, num_warps=4)["loops"]
    assert (loop["function"], loop["call_line"], loop["step"]) == ("helper", None, step)
