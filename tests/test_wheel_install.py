"""The light library install: the wheel needs only torch, and `import matbackprop.spectral`
imports nothing else. Builds the wheel (no build isolation, nothing downloaded), installs it
with --no-deps into a fresh venv that sees only torch and torch's own requirements, and runs
the README's spectral example there."""

import importlib.metadata as md
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from .conftest import ROOT

# the pipelines' dependencies: none may be imported by `import matbackprop.spectral`
FORBIDDEN = (
    "hydra", "omegaconf", "wandb", "scipy", "numpy", "pandas", "pycocotools", "skimage",
    "sklearn", "matplotlib", "torchvision", "PIL", "tqdm", "submitit", "threadpoolctl",
    "wandb_workspaces",
)  # fmt: skip


def readme_spectral_example() -> str:
    """The first ```python block of the README's spectral-library section."""
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## The spectral layers") :]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def _requirement_closure(dist: str) -> set[str]:
    """dist and, recursively, its unconditional requirements that are installed."""
    seen, todo = set(), [dist]
    while todo:
        name = todo.pop()
        key = re.sub(r"[-_.]+", "-", name).lower()
        if key in seen:
            continue
        try:
            reqs = md.requires(name) or []
        except md.PackageNotFoundError:
            continue
        seen.add(key)
        for r in reqs:
            if "extra ==" in r:
                continue
            if ";" in r and "sys_platform" not in r and "platform_system" not in r:
                continue
            todo.append(re.split(r"[ ;<>=!~\[(]", r.strip(), maxsplit=1)[0])
    return seen


def _top_level_paths(dists: set[str]) -> set[Path]:
    """The site-packages entries (packages, modules, .libs) that belong to these dists."""
    out = set()
    for name in dists:
        d = md.distribution(name)
        for f in d.files or []:
            top = f.parts[0]
            if top.endswith((".dist-info", ".egg-info")) or top in ("..", "bin"):
                continue
            out.add(Path(d.locate_file(top)))
    return out


@pytest.mark.slow
def test_wheel_in_fresh_venv_needs_only_torch(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    src = tmp_path / "src_copy"  # build from a copy: no build/ or egg-info in the checkout
    shutil.copytree(
        ROOT / "src", src / "src", ignore=shutil.ignore_patterns("*.egg-info", "__pycache__")
    )
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    wheels = tmp_path / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
         "-q", "-w", str(wheels), str(src)],
        check=True, timeout=300, env=env,
    )  # fmt: skip
    (wheel,) = wheels.glob("matbackprop-*.whl")

    venv = tmp_path / "venv"
    subprocess.run(
        [sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=300, env=env
    )  # fmt: skip
    py = venv / "bin" / "python"
    subprocess.run(  # this pip, installing into the fresh venv (which has no pip of its own)
        [sys.executable, "-m", "pip", "--python", str(py), "install", "-q", "--no-deps",
         "--no-index", str(wheel)],
        check=True, timeout=300, env=env,
    )  # fmt: skip

    # torch only: a directory of links to torch and its own requirements, on a .pth path
    torch_only = tmp_path / "torch_only"
    torch_only.mkdir()
    allowed = _requirement_closure("torch")
    assert "numpy" not in allowed and "scipy" not in allowed
    for p in _top_level_paths(allowed):
        if p.exists():
            (torch_only / p.name).symlink_to(p)
    site = subprocess.run(
        [py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True, capture_output=True, text=True,
    ).stdout.strip()  # fmt: skip
    (Path(site) / "torch_only.pth").write_text(str(torch_only) + "\n")

    probe = textwrap.dedent(
        f"""
        import importlib.metadata as md, sys
        import matbackprop.spectral
        assert matbackprop.spectral.__file__.startswith({str(venv)!r}), matbackprop.__file__
        requires = [r for r in md.requires("matbackprop") if "extra ==" not in r]
        assert [r.split(">")[0].split("=")[0].strip() for r in requires] == ["torch"], requires
        leaked = sorted({{m.split(".")[0] for m in sys.modules}} & set({FORBIDDEN!r}))
        assert not leaked, f"import matbackprop.spectral imported {{leaked}}"
        """
    )
    example = readme_spectral_example()
    out = subprocess.run(
        [py, "-c", probe + "\n" + example + "\nprint('README example ran')"],
        capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    assert "README example ran" in out.stdout
