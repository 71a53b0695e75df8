"""Download, as wheels, what ``python -m training.sft`` needs that the lent GPU machines' image lacks, so the
study's arms can be trained there through ``training.sft`` (the users' path) instead of ``arms.py``.

    python examples/small_model_study/gpu/wheels.py            # writes .whl/ (git-ignored) and prints its size

The image (the device tool's KINDS.md, read 2026-11-17) has Python 3.12, torch, transformers 5.17, peft,
accelerate, tokenizers, safetensors, pyarrow, pandas and more, but no TRL, datasets, pydantic or LangChain. The
list below is the import closure of ``training.sft`` (with TRL and datasets, which it imports lazily) taken in
this environment, less the distributions the image holds; transformers stays the image's (``training.sft`` runs
on 5.17, docs/gpu_checks.md). On the device machine, carry ``.whl`` and begin the command with

    python3 -m pip install -q --no-index --no-deps --no-compile --target .site .whl/*.whl \
        && export PYTHONPATH=.site:.
"""

from __future__ import annotations

import importlib
import importlib.metadata as md
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]

IMAGE = set("""absl-py accelerate aiofiles aiohappyeyeballs aiohttp aiosignal annotated-doc anyio attrs botorch build
certifi charset-normalizer chex click cloudpickle cmake colorama contourpy coverage cycler cython einops filelock
fonttools frozenlist fsspec h11 h5py hf-xet httpcore httpx huggingface-hub idna jinja2 joblib kiwisolver
markdown-it-py markupsafe matplotlib mdurl ml-dtypes mpmath msgpack multidict networkx numpy packaging pandas peft
pillow pip pluggy propcache protobuf psutil pyarrow pygments pyparsing python-dateutil pyyaml regex requests rich
safetensors scipy setuptools six sympy tokenizers torch tqdm transformers triton typing-extensions urllib3 wheel
wrapt xxhash yarl zipp""".split())  # noqa: SIM905 - pasted from KINDS.md
"""Distributions the GPU image already has (a subset of KINDS.md's list: those this closure can meet)."""

PLATFORMS = ["manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64",
             "manylinux1_x86_64", "manylinux_2_24_x86_64", "manylinux_2_31_x86_64", "manylinux_2_34_x86_64",
             "manylinux_2_35_x86_64"]


def _norm(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


def needed() -> dict[str, str]:
    """Distribution -> version for every module ``training.sft`` loads here that the image lacks."""
    sys.path.insert(0, str(ROOT))
    for module in ("training.sft", "training.data", "trl", "datasets"):
        importlib.import_module(module)
    from trl import SFTTrainer  # noqa: F401 - TRL imports its trainer modules lazily

    owners = md.packages_distributions()
    dists = {d for m in list(sys.modules) for d in owners.get(m.split(".")[0], [])}
    wanted = {}
    for dist in dists:
        if _norm(dist) in IMAGE or _norm(dist) == "agentrefine-lg":
            continue
        wanted[_norm(dist)] = md.version(dist)
    return dict(sorted(wanted.items()))


def main() -> int:
    out = ROOT / ".whl"
    out.mkdir(exist_ok=True)
    wanted = needed()
    platforms = [f"--platform={p}" for p in PLATFORMS]
    for name, version in wanted.items():
        cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:", "--python-version",
               "3.12", "--implementation", "cp", *platforms, "-d", str(out), f"{name}=={version}"]
        if subprocess.run(cmd, check=False).returncode:
            print(f"no wheel for {name}=={version}", file=sys.stderr)
            return 1
    size = sum(f.stat().st_size for f in out.glob("*.whl"))
    print(f"{len(wanted)} wheels in {out}: {size / 2**20:.1f} MiB (a device call carries at most 64 MiB)")
    print(" ".join(f"{n}=={v}" for n, v in wanted.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
