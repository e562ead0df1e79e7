"""From the repository root, ``import kernels`` must reach an installed package of that name
(Hugging Face's, which transformers >= 5.25 imports), not the folder of judgefree.kernels."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _import_kernels_from_the_root(extra_path: str | None) -> str:
    code = "import kernels; print(getattr(kernels, 'MARK', 'ours:' + kernels.__file__))"
    env = {"PYTHONPATH": extra_path} if extra_path else {}
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                          env={**_base_env(), **env}, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def _base_env() -> dict:
    import os

    return {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}


def test_an_installed_kernels_package_wins_over_the_folder(tmp_path):
    installed = tmp_path / "site" / "kernels"
    installed.mkdir(parents=True)
    (installed / "__init__.py").write_text("MARK = 'installed'\n")
    assert _import_kernels_from_the_root(str(tmp_path / "site")) == "installed"


def test_without_one_the_folder_stays_and_judgefree_kernels_is_untouched():
    out = _import_kernels_from_the_root(None)
    site = [Path(p) for p in sys.path if "site-packages" in p]
    installed = next((d / "kernels" / "__init__.py" for d in site if (d / "kernels" / "__init__.py").exists()), None)
    expected = installed or ROOT / "kernels" / "__init__.py"  # Hugging Face's where this venv has it
    assert Path(out[len("ours:"):]).resolve() == expected.resolve()
    from judgefree.kernels import linear_logprobs, mix_sample  # noqa: F401


def test_no_top_level_folder_hides_an_installed_package():
    """Every repository folder whose name an installed distribution also provides as a top-level
    package (today Hugging Face's `kernels`; tomorrow perhaps an `engine` or `world`) must hand the
    import to the installed one, as kernels/__init__.py does; this finds the next collision."""
    import importlib.metadata

    provided = importlib.metadata.packages_distributions()
    folders = sorted(p.name for p in ROOT.iterdir() if (p / "__init__.py").is_file() and p.name != "judgefree")
    clashes = [name for name in folders if name in provided]
    if not clashes:
        return  # nothing installed shares a folder's name (transformers < 5.25 has no `kernels`)
    code = "import importlib, sys; [print(importlib.import_module(n).__file__) for n in sys.argv[1:]]"
    done = subprocess.run([sys.executable, "-c", code, *clashes], cwd=ROOT, capture_output=True, text=True,
                          env=_base_env(), timeout=60)
    assert done.returncode == 0, done.stderr
    hidden = [name for name, path in zip(clashes, done.stdout.split())
              if Path(path).resolve().is_relative_to(ROOT / name)]
    assert not hidden, (f"{hidden} shadow installed packages of the same name ({[provided[n] for n in hidden]}) "
                        "from the repository root: hand the import off as kernels/__init__.py does")
