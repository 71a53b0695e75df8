"""The tiny local model: a 2-layer Llama with a 2k byte-level BPE tokenizer and a Llama-3 chat template.

It exists so that training, merging, serving and evaluation run end to end offline (no hub, no GPU)
and in tests. It learns nothing useful; it is a real ``LlamaForCausalLM`` with a real tokenizer, so
every code path (chat template, label masks, LoRA, merge, ``generate``) is the one a user's model takes.

Both builders are deterministic (fixed corpus, fixed seed) and idempotent: a directory that already
holds a complete build is reused, so concurrent tests can share one cache directory.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

# Llama-3 special tokens (the names matter to users reading the tokenizer; the ids are ours).
BOS = "<|begin_of_text|>"
EOS_TEXT = "<|end_of_text|>"
START_HEADER = "<|start_header_id|>"
END_HEADER = "<|end_header_id|>"
EOT = "<|eot_id|>"
PAD = "<|finetune_right_pad_id|>"
SPECIAL_TOKENS = [BOS, EOS_TEXT, START_HEADER, END_HEADER, EOT, PAD]

# Llama-3-Instruct's template, verbatim in structure: no {% generation %} markers, so label masks must
# come from prefix rendering (training.data) exactly as for the real Llama 3 / Qwen / Mistral templates.
CHAT_TEMPLATE = (
    "{% set loop_messages = messages %}"
    "{% for message in loop_messages %}"
    "{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'"
    " + message['content'] | trim + '<|eot_id|>' %}"
    "{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}"
    "{{ content }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)

VOCAB_SIZE = 2048
MODEL_CONFIG = dict(
    hidden_size=64,
    intermediate_size=256,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,  # grouped-query attention, as in Llama 3
    max_position_embeddings=4096,
    rope_theta=500000.0,
    rms_norm_eps=1e-5,
    tie_word_embeddings=False,
)
STUDENT_VOCAB_SIZE = 4096
STUDENT_CONFIG = dict(
    # The method study's student (issue 16): trained from scratch on the study's own rows, big enough to learn
    # to follow a grounded world's goal (copying names from the prompt needs a few layers of attention), small
    # enough that one arm trains in minutes on 2 CPU cores. ~2.6 M parameters with the 4k vocabulary.
    hidden_size=192,
    intermediate_size=512,
    num_hidden_layers=4,
    num_attention_heads=4,
    num_key_value_heads=4,
    max_position_embeddings=2048,
    rope_theta=10000.0,
    rms_norm_eps=1e-5,
    tie_word_embeddings=True,
)
_MARKER = "tiny_model.json"  # written last: its presence means the directory holds a complete build
_TOKENIZER_MARKER = "tokenizer.json"

# A small corpus in the register the model will see: task instructions, Thought/Action answers,
# observations (including error feedback), the paper's sample (tests/fixtures) and some general chat.
_CORPUS = [
    # the paper's sample script and trajectory (tests/fixtures/*_unix_admin.json)
    "A recent graduate joining the IT department and eager to learn UNIX administration.",
    ("A small Linux workstation. The player starts in /home/user. There is a project folder with a "
    "configuration file that controls a backup service."),
    "Remember: the backup service reads project/config.cfg.",
    "mode=off\nretries=3",
    "127.0.0.1 localhost",
    "Navigate to the project folder and edit config.cfg so that it contains 'mode=on'.",
    "The player is in /home/user/project.",
    "The file /home/user/project/config.cfg contains the line 'mode=on'.",
    "Change the current directory.",
    "List a directory or show that a file exists.",
    "Print a file.",
    "Set key=value in a configuration file in the current directory.",
    ('"cd {path}": {"verification code": "^\\\\s*cd\\\\s+(\\\\S+)\\\\s*$", "parameters": {"path": ["/home/user", '
    '"/home/user/project", "/etc", "project", "..", "~"]}}'),
    ('{"locations": ["/home/user", "/home/user/project", "/etc"], "documents": {"/home/user/notes.txt": "..."}, '
    '"player": {"location": "/home/user", "permissions": "user"}}'),
    "You are in /home/user. You see notes.txt and a folder named project.",
    "Thought: The notes may tell me which file the backup service reads.\nAction: cat notes.txt",
    "Thought: I will edit the file right away.\nAction: set config.cfg mode on",
    "Error: config.cfg: No such file in /home/user.",
    "Thought: The file lives in the project folder, so I must go there first.\nAction: cd project",
    "You are in /home/user/project. You see config.cfg.",
    "Thought: Let me set the mode now.\nAction: set mode=on in config.cfg",
    "Error: Invalid command format. Usage: set {file} {key} {value}.",
    "Thought: I used the wrong syntax; the usage is set FILE KEY VALUE.\nAction: set config.cfg mode on",
    "config.cfg updated: mode=on. Task complete.",
    ('{"turn": 5, "role": "DM", "Thought": "...", "Observation": "...", "parameter_error": false, '
    '"place_error": true, "logic_error": false}'),
    '{"Persona": "...", "Environment": {}, "Goal": "...", "Completion Conditions": [], "Available Actions": {}}',
    # the agent instruction (agentrefine_lg.agent_format.AGENT_SYSTEM), paraphrased pieces
    ("You are an agent acting in an interactive environment. Read the environment's feedback after every "
    "action and correct yourself when an action fails."),
    "Environment:", "Goal:", "Completion conditions:",
    "Available actions (use exactly these forms; replace each {slot} with one allowed value):",
    "- cd {path} — Change the current directory.\n  allowed values: path: /home/user, project, ..",
    ("Answer format: every reply is one thought and one action, exactly:\nThought: <your reasoning about the "
    "last observation and what to do next>\nAction: <one action>"),
    "Your task: find the key and open the door.",
    # household / game / science / planning environments (the held-out task families)
    ("You are in the middle of a room. Looking quickly around you, you see a cabinet 1, a countertop 1, a "
    "drawer 2, a fridge 1, a sinkbasin 1 and a toaster 1."),
    "Thought: I need to find a mug. It is probably on the countertop.\nAction: go to countertop 1",
    "On the countertop 1, you see a mug 1, a knife 2 and a loaf of bread.",
    "Thought: I see the mug. I will take it.\nAction: take mug 1 from countertop 1",
    "Nothing happens.",
    "Thought: That did not work; the valid form is pick up.\nAction: pick up mug 1",
    "You pick up the mug 1 from the countertop 1.",
    "Thought: Now I should heat the mug in the microwave.\nAction: heat mug 1 with microwave 1",
    "You are in a kitchen. There is a closed door to the north and a key on the table.",
    "Thought: The door is locked, so I should take the key first.\nAction: take key",
    "You can't go that way. The door is locked.",
    "Thought: I have the key now, so I can unlock the door.\nAction: unlock door with key",
    "Your score has just gone up by one point.",
    "Thought: The goal is to measure the temperature of the water.\nAction: use thermometer on water",
    "The thermometer measures a temperature of 25 degrees celsius.",
    "Thought: The block a is on block b. I must unstack it before I can stack b on c.\nAction: unstack a from b",
    "Invalid action: the gripper is not empty.",
    "Thought: The agent must move forward two steps and turn left to face the red ball.\nAction: move forward",
    "You see a wall 2 steps forward, a red ball 1 step left.",
    "Thought: I should check which actions are valid here.\nAction: check valid actions",
    "Choose an action from these valid actions: go north, go south, open door, take key, inventory, look.",
    "Error: Unknown command. Try one of: look, inventory, go <direction>, take <item>, open <container>.",
    "Thought: I made a mistake in the parameter. The file name is notes.txt, not note.txt.\nAction: cat notes.txt",
    "Thought: I am in the wrong place. I must go back to the parent directory.\nAction: cd ..",
    "Thought: The task is complete. All completion conditions hold.\nAction: finish",
    # general chat
    "Hello! How can I help you today?",
    "Can you explain what a configuration file is?",
    ("A configuration file stores settings that a program reads when it starts, such as modes, paths, "
    "timeouts and the number of retries."),
    "Write a short poem about the sea.",
    "The quick brown fox jumps over the lazy dog. 0 1 2 3 4 5 6 7 8 9 10 100 2024",
    "Sure. Here is a list of steps: first, read the instructions; second, check the observation; third, act.",
    'def main(args: list[str]) -> int:\n    print("hello world")\n    return 0\n',
    '{"role": "assistant", "content": "Thought: ...\\nAction: ..."}',
    ("Machine learning models are trained on examples. A language model predicts the next token of a text; "
    "fine-tuning adapts a pretrained model to a new task with a smaller dataset and a lower learning rate."),
    ("The weather today is sunny with a light breeze from the west. Temperatures will reach twenty-two "
    "degrees in the afternoon, and clouds may gather over the mountains by evening."),
    ("In the library there are shelves of books about history, physics, chemistry, biology, mathematics, "
    "geography, literature, music and painting. Visitors borrow them for three weeks."),
    ("To bake bread, mix flour, water, salt and yeast; knead the dough, let it rise for an hour, shape it, "
    "and bake it in a hot oven until the crust is golden brown."),
    "Please summarize the following paragraph in one sentence and translate it into French and German.",
    ("The server returned status code 404 because the requested resource could not be found. Check the URL, "
    "the permissions of the directory, and the logs in /var/log for more information."),
    ("Agents that receive feedback from an environment can notice their mistakes, revise their plan and try "
    "a different action instead of repeating the same failing command again and again."),
    "north south east west up down left right forward backward inside outside above below between behind",
    "apple banana cherry orange lemon potato tomato lettuce egg bread cheese butter milk coffee tea water",
    ("open close take drop put examine look inventory wait read write move push pull turn heat cool clean "
    "slice use unlock lock insert remove connect disconnect focus pour mix wait1 teleport"),
    "kitchen bedroom bathroom hallway garden garage office laboratory greenhouse workshop cellar attic",
]


def _corpus() -> list[str]:
    """The training corpus: the fixed texts plus the real agent instruction, in a fixed order."""
    texts = list(_CORPUS)
    try:  # the one instruction used for training and evaluation; keep tokenization of it reasonable
        from agentrefine_lg import agent_format

        texts += [agent_format.AGENT_SYSTEM, agent_format.AGENT_ACTION_LINE, agent_format.AGENT_TURN]
    except ImportError:  # pragma: no cover - training/ used without the library
        pass
    # The shipped data (grounded-teacher and hand-written trajectories): the register of the default run.
    for name in ("default.jsonl", "handwritten.jsonl"):
        path = Path(__file__).parent / "data" / name
        if path.exists():
            for line in path.read_text(encoding="utf-8").splitlines():
                texts += [m["content"] for m in json.loads(line).get("messages", [])]
    return texts


def _train_tokenizer(corpus: list[str] | None = None, vocab_size: int = VOCAB_SIZE, max_length: int | None = None):
    """Train the byte-level BPE (deterministic for a fixed corpus; default: the built-in one) and wrap it for
    transformers."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    # trim_offsets=False: offsets must cover every character so label spans map exactly onto tokens.
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=1,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    # Repeat the corpus with the chat framing so header/role merges are learnt too.
    corpus = _corpus() if corpus is None else list(corpus)
    framed = [f"{START_HEADER}{role}{END_HEADER}\n\n{text}{EOT}" for text in corpus for role in ("system", "user", "assistant")]
    tok.train_from_iterator(corpus + framed, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=BOS,
        eos_token=EOT,  # Llama-3-Instruct ends a turn (and generation) with <|eot_id|>
        pad_token=PAD,
        padding_side="right",
        chat_template=CHAT_TEMPLATE,
        model_max_length=max_length or MODEL_CONFIG["max_position_embeddings"],
        clean_up_tokenization_spaces=False,
    )


def build_tiny_tokenizer(out_dir: str | os.PathLike | None = None):
    """The tiny tokenizer (byte-level BPE, ~2k vocab, Llama-3 special tokens and chat template).

    When ``out_dir`` is given the tokenizer is also saved there (``save_pretrained``), reusing a
    tokenizer already saved in that directory.
    """
    from transformers import AutoTokenizer

    if out_dir is not None and (Path(out_dir) / _TOKENIZER_MARKER).exists():
        return AutoTokenizer.from_pretrained(str(out_dir))
    tokenizer = _train_tokenizer()
    if out_dir is not None:
        _atomic_save(Path(out_dir), lambda tmp: tokenizer.save_pretrained(str(tmp)), last=_TOKENIZER_MARKER)
    return tokenizer


def build_tiny_model(out_dir: str | os.PathLike, *, seed: int = 0) -> Path:
    """Build (or reuse) the tiny ``LlamaForCausalLM`` + tokenizer in ``out_dir``; returns the directory.

    The directory loads with ``AutoModelForCausalLM.from_pretrained`` / ``AutoTokenizer.from_pretrained``
    and serves like any local model. Deterministic for a given ``seed``; a few MB on disk.
    """
    out = Path(out_dir)
    marker = out / _MARKER
    if marker.exists():
        info = json.loads(marker.read_text())
        if info.get("seed") == seed:
            return out
    tokenizer = _train_tokenizer()
    model = _init_llama(tokenizer, MODEL_CONFIG, seed)

    def save(tmp: Path) -> None:
        model.save_pretrained(str(tmp), safe_serialization=True)
        tokenizer.save_pretrained(str(tmp))
        (tmp / _MARKER).write_text(json.dumps({"seed": seed, "config": MODEL_CONFIG, "vocab_size": len(tokenizer)}))

    _atomic_save(out, save, last=_MARKER)
    return out


def _init_llama(tokenizer, config: dict, seed: int):
    """A randomly initialised ``LlamaForCausalLM`` for ``tokenizer`` (private RNG: callers' state is untouched)."""
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    llama = LlamaConfig(vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id,
                        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, **config)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(llama)
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=[tokenizer.eos_token_id, tokenizer.convert_tokens_to_ids(EOS_TEXT)],
        pad_token_id=tokenizer.pad_token_id,
    )
    return model


def student_corpus(data_files: list[str | os.PathLike]) -> list[str]:
    """Every message text of the rows in ``data_files`` (our JSONL rows), in file order: the student's tokenizer
    corpus, so the words of the task family get tokens of their own."""
    texts: list[str] = []
    for path in data_files:
        for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                texts += [m["content"] for m in json.loads(line)["messages"]]
            except (ValueError, KeyError, TypeError) as exc:
                from agentrefine_lg.errors import InputError

                raise InputError(f"not a training row with 'messages' ({exc})", where=f"{path}:{number}",
                                 field="messages") from None
    return texts


def build_student(out_dir: str | os.PathLike, data_files: list[str | os.PathLike], *, seed: int = 0,
                  config: dict | None = None, vocab_size: int = STUDENT_VOCAB_SIZE,
                  general_corpus: bool = False) -> Path:
    """A model to train **from scratch** on ``data_files``: a byte-level BPE trained on their texts (Llama-3
    special tokens and chat template) and a randomly initialised Llama (``STUDENT_CONFIG`` unless ``config``).
    ``general_corpus`` adds the tiny model's built-in corpus to the tokenizer's, for a student that will also
    read text unlike its rows (the quickstart's held-out tasks) in words rather than bytes.

    Idempotent: a folder already holding a build with the same settings is reused; other settings are refused.
    """
    out = Path(out_dir)
    config = dict(config or STUDENT_CONFIG)
    recipe = {"seed": seed, "config": config, "vocab_size": vocab_size,
              "data": [os.path.basename(str(p)) for p in data_files]}
    if general_corpus:  # recorded only when on, so folders built before the option still match
        recipe["general_corpus"] = True
    marker = out / _MARKER
    if marker.exists():
        built = json.loads(marker.read_text())
        if {k: built.get(k) for k in recipe} == recipe:
            return out
        from agentrefine_lg.errors import InputError

        raise InputError(f"{out} holds a model built with other settings ({built}); choose another folder",
                         field="out")
    corpus = student_corpus(data_files) + (_corpus() if general_corpus else [])
    tokenizer = _train_tokenizer(corpus, vocab_size, config["max_position_embeddings"])
    model = _init_llama(tokenizer, config, seed)

    def save(tmp: Path) -> None:
        model.save_pretrained(str(tmp), safe_serialization=True)
        tokenizer.save_pretrained(str(tmp))
        n_params = sum(p.numel() for p in model.parameters())
        (tmp / _MARKER).write_text(json.dumps({**recipe, "parameters": n_params, "vocab_actual": len(tokenizer)}))

    _atomic_save(out, save, last=_MARKER)
    return out


def _atomic_save(out: Path, save, *, last: str) -> None:
    """Save into a private temp dir, then move the files into ``out`` with ``last`` moved last.

    Concurrent builders write identical files, so the racing renames are harmless, and a reader that
    sees ``last`` sees a complete directory.
    """
    out.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tiny-", dir=out))
    try:
        save(tmp)
        names = sorted(p.name for p in tmp.iterdir() if p.name != last)
        for name in names + ([last] if (tmp / last).exists() else []):
            os.chmod(tmp / name, 0o644)  # temp files may be created 0600; the model is meant to be shared
            os.replace(tmp / name, out / name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    """``python -m training.tiny --out DIR [--data ROWS.jsonl ...]``: the tiny model, or with ``--data`` a
    from-scratch student whose tokenizer is trained on those rows."""
    import argparse

    p = argparse.ArgumentParser(prog="python -m training.tiny", description=main.__doc__)
    p.add_argument("--out", required=True, help="model folder to write (reused when already built)")
    p.add_argument("--data", nargs="*", default=[], help="training rows (JSONL): build the student on them")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    path = build_student(args.out, args.data, seed=args.seed) if args.data else build_tiny_model(args.out, seed=args.seed)
    print(json.loads((Path(path) / _MARKER).read_text()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())


__all__ = ["CHAT_TEMPLATE", "SPECIAL_TOKENS", "STUDENT_CONFIG", "build_student", "build_tiny_model",
           "build_tiny_tokenizer", "student_corpus"]
