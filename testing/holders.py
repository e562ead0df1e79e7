"""Other processes for the tests of locks and concurrent writers: a process holding a folder's
lock (``hold_lock``) and a ``judgefree`` command run in a child process with the fake engine,
optionally stopped at a chosen point (``run_cli``)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from contextlib import contextmanager
from pathlib import Path

from judgefree.threads import torch_threads

_HOLDER = textwrap.dedent("""
    import sys, time
    from judgefree.locks import FolderLock
    lock = FolderLock(sys.argv[1], "holder for a test", name=sys.argv[2]).acquire()
    print("locked", flush=True)
    time.sleep(600)
""")


@contextmanager
def hold_lock(folder: Path, name: str = ".judgefree.lock"):
    """A child process holding ``folder``'s lock while the block runs; yields the process."""
    child = subprocess.Popen([sys.executable, "-c", _HOLDER, str(folder), name], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "locked"
        yield child
    finally:
        child.kill()
        child.wait(timeout=60)


# A judgefree command with the fake engine in place of the real one. KILL_AT ("module:function:n")
# sends SIGKILL to the process on the n-th call of that function, before it runs; WAIT_FOR (a
# path) makes the fake engine's first call wait until that file exists (after writing
# WAIT_FOR + ".ready"), so a test can act while the command holds its lock.
_CLI = textwrap.dedent("""
    import importlib, os, signal, sys, time
    from pathlib import Path
    import judgefree.engine
    from judgefree.testing.fake_engine import FakeEngine

    wait_for = os.environ.get("WAIT_FOR")

    class Engine(FakeEngine):
        def generate_pairs(self, *args, **kwargs):
            if wait_for and not self.calls:
                Path(wait_for + ".ready").write_text("ready")
                while not Path(wait_for).exists():
                    time.sleep(0.05)
            return super().generate_pairs(*args, **kwargs)

    judgefree.engine.Engine = Engine
    kill_at = os.environ.get("KILL_AT")
    if kill_at and os.environ.get("KILL_RANK", os.environ.get("RANK", "0")) != os.environ.get("RANK", "0"):
        kill_at = None  # KILL_RANK: only that rank of a torchrun job dies
    if kill_at:
        module_name, name, nth = kill_at.split(":")
        module = importlib.import_module(module_name)
        owner, attr = (getattr(module, name.split(".")[0]), name.split(".")[1]) if "." in name else (module, name)
        original, calls = getattr(owner, attr), []

        def dying(*args, **kwargs):
            calls.append(1)
            if len(calls) == int(nth):
                os.kill(os.getpid(), signal.SIGKILL)
            return original(*args, **kwargs)

        setattr(owner, attr, dying)
    from judgefree.cli.main import main
    sys.exit(main(sys.argv[1:]))
""")


def cli_command(argv: list[str]) -> list[str]:
    return [sys.executable, "-c", _CLI, *argv]


def run_torchrun(argv: list[str], nproc: int, tmp: Path, *, kill_at: str | None = None, kill_rank: int | None = None,
                 timeout: float = 300) -> subprocess.CompletedProcess:
    """``torchrun --standalone --nproc-per-node NPROC judgefree ARGV`` (fake engine, one thread
    per rank); ``kill_at`` as for ``run_cli``, on rank ``kill_rank`` only."""
    script = tmp / "judgefree_fake_cli.py"
    script.write_text(_CLI)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for name in ("WAIT_FOR", "KILL_AT", "KILL_RANK", "JUDGEFREE_JOB_ID", "RANK", "WORLD_SIZE", "LOCAL_RANK"):
        env.pop(name, None)
    if kill_at:
        env.update(KILL_AT=kill_at, KILL_RANK=str(kill_rank if kill_rank is not None else 0))
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(nproc),
               str(script), *argv]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout)


def run_cli_here(argv: list[str]) -> subprocess.CompletedProcess:
    """``judgefree ARGV`` in this process (fake engine, one torch thread, as each torchrun rank
    and ``run_cli``'s child have): the one-process reference a multi-rank job is compared with,
    without the seconds a child spends starting Python and importing torch. Never killed."""
    import contextlib
    import io

    import judgefree.engine
    from judgefree.cli.main import main
    from judgefree.testing.fake_engine import FakeEngine

    out, err, engine = io.StringIO(), io.StringIO(), judgefree.engine.Engine
    judgefree.engine.Engine = FakeEngine
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), torch_threads(1):
            code = main(list(argv))
    finally:
        judgefree.engine.Engine = engine
    return subprocess.CompletedProcess(["judgefree", *argv], code, out.getvalue(), err.getvalue())


def run_cli(argv: list[str], *, kill_at: str | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """``judgefree ARGV`` in a child process (fake engine); ``kill_at`` as described above."""
    env = {**os.environ, **({"KILL_AT": kill_at} if kill_at else {})}
    env.pop("WAIT_FOR", None)
    return subprocess.run(cli_command(argv), env=env, capture_output=True, text=True, timeout=timeout)


def start_cli(argv: list[str], wait_for: Path) -> subprocess.Popen:
    """``judgefree ARGV`` in a child process whose fake engine waits for ``wait_for`` to exist."""
    env = {**os.environ, "WAIT_FOR": str(wait_for)}
    env.pop("KILL_AT", None)
    return subprocess.Popen(cli_command(argv), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
