"""Specification of the embedded grounded teacher (TextWorld games as script, DM and Player).

Three small games are generated once per session into a temporary cache (a few seconds each).
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

pytest.importorskip("textworld")

from agentrefine_lg.checks import check_script, check_trajectory, compile_verification, match_action
from agentrefine_lg.errors import InputError
from agentrefine_lg.schema import Script, Trajectory, Turn
from agentrefine_lg.synthesis import roles
from agentrefine_lg.synthesis.grounded import (
    GROUNDING_KEY,
    GameSpec,
    GroundedDM,
    GroundedPlayer,
    GroundedScriptWriter,
    GroundedWorlds,
    TextWorldEnv,
    generate_game,
    grounded_teacher,
    load_game_info,
    spec_for_persona,
    synthesize_grounded,
    verification_regex,
)
from agentrefine_lg.synthesis.grounded.player import cite

# Chosen so the three games are small and of three kinds (custom quest, cooking, treasure hunter).
PERSONAS = {
    "custom": "A beekeeper who sells honey at the farmers' market.",
    "cooking": "A data scientist who loves board games.",
    "treasure_hunter": "A retired ship captain writing his memoirs.",
}
FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture(scope="session")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("textworld")


@pytest.fixture(scope="session")
def worlds(cache) -> GroundedWorlds:
    return GroundedWorlds(cache)


@pytest.fixture(scope="session")
def scripts(worlds) -> dict[str, Script]:
    writer = GroundedScriptWriter(worlds)
    return {kind: writer.write_script(persona) for kind, persona in PERSONAS.items()}


@pytest.fixture(scope="session")
def trajectories(cache, scripts) -> dict[str, list[Turn]]:
    teacher = grounded_teacher(cache, seed=0)
    return {kind: synthesize_grounded(PERSONAS[kind], teacher=teacher)[1] for kind in scripts}


def _game_file(worlds: GroundedWorlds, script: Script) -> Path:
    return worlds.game_file(script)


def _dm_answer(dm: GroundedDM, script: Script, actions: list[str]) -> Turn:
    """The DM's answer to the last of ``actions`` after the DM accepted or rejected the ones before."""
    history = [dm.respond(script, [])]
    for action in actions:
        history.append(Turn(turn=len(history) + 1, role="Player", thought="t", action=action))
        history.append(dm.respond(script, history))
    return history[-1]


# ---------------------------------------------------------------------------------------------- scripts


def test_persona_picks_the_world(scripts, worlds):
    assert spec_for_persona(PERSONAS["custom"]) == spec_for_persona("  a beekeeper who sells HONEY at the farmers' market. ")
    assert {kind: spec_for_persona(p).kind for kind, p in PERSONAS.items()} == {k: k for k in PERSONAS}
    games = {s.model_extra[GROUNDING_KEY]["game"] for s in scripts.values()}
    environments = {json.dumps(s.environment, sort_keys=True) for s in scripts.values()}
    assert len(games) == 3 and len(environments) == 3
    for kind, script in scripts.items():
        assert script.persona == PERSONAS[kind]
        assert _game_file(worlds, script).with_suffix(".json").is_file()


def test_same_spec_makes_the_same_game_silently(tmp_path, scripts, worlds, capfd):
    spec = GameSpec.from_dict(scripts["treasure_hunter"].model_extra[GROUNDING_KEY]["spec"])
    capfd.readouterr()
    again = load_game_info(generate_game(spec, tmp_path))
    out, err = capfd.readouterr()
    assert out == "" and err == ""  # generation and compilation print nothing
    first = load_game_info(_game_file(worlds, scripts["treasure_hunter"]))
    assert again.walkthrough == first.walkthrough
    assert again.initial.facts == first.initial.facts


def test_script_derivation_covers_the_walkthrough(scripts, worlds):
    for kind, script in scripts.items():
        report = check_script(script)
        assert report.ok, report.summary()
        info = load_game_info(_game_file(worlds, script))
        assert len(info.walkthrough) >= 3
        for command in info.walkthrough:
            m = match_action(script, command)
            assert m.ok, f"{kind}: walkthrough step {command!r}: {m.message}"
            spec = script.available_actions[m.template]
            assert all(value in spec.parameters[slot] for slot, value in m.values.items())
        env = script.environment
        assert env["player"]["location"] in env["rooms"] and script.goal and script.completion_conditions
        assert "go {direction}" in script.available_actions
        assert script.available_actions["go {direction}"].parameters["direction"] == ["north", "south", "east", "west"]


def test_script_round_trips_with_its_grounding(scripts):
    script = scripts["cooking"]
    again = Script.model_validate(json.loads(script.to_json()))
    assert again.model_extra[GROUNDING_KEY] == script.model_extra[GROUNDING_KEY]
    assert again.available_actions.keys() == script.available_actions.keys()


def test_verification_regex_is_anchored_with_one_group_per_slot():
    pattern = verification_regex("take {item} from {container_or_supporter}")
    assert pattern == r"^\s*take\s+(.+?)\s+from\s+(.+?)\s*$"
    compiled = compile_verification(pattern)  # the checker's safety gate accepts it
    assert compiled.fullmatch("  take loaf of bread   from  wooden table ").groups() == ("loaf of bread", "wooden table")
    assert compiled.fullmatch("take loaf of bread") is None
    assert verification_regex("prepare meal") == r"^\s*prepare\s+meal\s*$"


def test_games_with_names_the_parser_confuses_are_refused(scripts, worlds):
    """'box' and 'limited edition box' in one room make the parser ask back instead of acting."""
    import textworld

    from agentrefine_lg.synthesis.grounded.engine import ambiguous_names

    game = textworld.Game.load(str(_game_file(worlds, scripts["custom"]).with_suffix(".json")))
    assert ambiguous_names(game) is None
    portable = next(info for info in game.infos.values() if str(info.type) == "o" or
                    game.kb.types.is_descendant_of(str(info.type), "o"))
    other = next(info for info in game.infos.values()
                 if info.name and info is not portable and str(info.type) not in ("r", "P", "I"))
    other.name = f"limited edition {portable.name}"
    assert ambiguous_names(game) == (portable.name, other.name)


# ---------------------------------------------------------------------------------------------- the DM


def test_dm_opening_and_acceptance(scripts, worlds):
    dm = GroundedDM(worlds)
    script = scripts["custom"]
    opening = dm.respond(script, [])
    assert opening.turn == 1 and opening.role == "DM" and not opening.flagged and opening.task_completed is None
    assert opening.observation.startswith(script.goal[:30])
    info = load_game_info(_game_file(worlds, script))
    answer = _dm_answer(dm, script, [info.walkthrough[0]])
    assert answer.turn == 3 and not answer.flagged and answer.task_completed is None


def test_dm_flags_each_error_kind(scripts, worlds):
    dm = GroundedDM(worlds)
    script = scripts["custom"]
    info = load_game_info(_game_file(worlds, script))
    state = info.initial

    wrong_form = "take the honey jar from the shelf please"
    answer = _dm_answer(dm, script, [wrong_form])
    assert answer.flags == ["parameter_error"] and not match_action(script, wrong_form).ok
    assert "the honey jar" in answer.observation

    unknown = "open unicorn"
    answer = _dm_answer(dm, script, [unknown])
    assert answer.flags == ["parameter_error"] and "unicorn" in answer.observation

    elsewhere = next(name for name in script.available_actions["examine {thing}"].parameters["thing"]
                     if state.exists(name) and not state.reachable(name))
    answer = _dm_answer(dm, script, [f"examine {elsewhere}"])
    assert answer.flags == ["place_error"], answer
    assert match_action(script, f"examine {elsewhere}").ok  # well-formed: the rule check accepts it

    no_exit = next(d for d in ("north", "south", "east", "west") if d not in state.exits.get(state.room, {}))
    answer = _dm_answer(dm, script, [f"go {no_exit}"])
    assert answer.flags == ["logic_error"] and "can't go that way" in answer.observation


def _premature_steps(walkthrough: list[str]) -> list[tuple[int, str]]:
    """(i, later step) pairs where the later step needs walkthrough[i] first: taking out of a container
    before opening it, unlocking before fetching the key."""
    out = []
    for i, step in enumerate(walkthrough):
        for later in walkthrough[i + 1:]:
            if step.startswith("open ") and later.startswith("take ") and later.endswith(" from " + step[5:]):
                out.append((i, later))
            if step.startswith("take ") and later.startswith("unlock ") and later.endswith(" with " + step[5:].split(" from ")[0]):
                out.append((i, later))
    return out


def test_dm_logic_error_for_steps_out_of_order(scripts, worlds):
    """Taking out of a closed container, unlocking without the key: well-formed, at hand, refused."""
    dm = GroundedDM(worlds)
    checked = set()
    for kind in ("custom", "cooking"):
        script = scripts[kind]
        walkthrough = load_game_info(_game_file(worlds, script)).walkthrough
        for i, later in _premature_steps(walkthrough):
            answer = _dm_answer(dm, script, [*walkthrough[:i], later])
            assert answer.flags == ["logic_error"], (kind, later, answer.observation)
            checked.add(later.split()[0])
    assert checked == {"take", "unlock"}


def test_dm_marks_the_win_and_replays_only_accepted_actions(scripts, worlds, cache):
    script = scripts["treasure_hunter"]
    info = load_game_info(_game_file(worlds, script))
    actions = []
    for step in info.walkthrough:
        actions += ["go nowhere", step]  # a rejected action before each step changes nothing
    answer = _dm_answer(GroundedDM(worlds), script, actions)
    assert answer.task_completed is True and not answer.flagged
    # A fresh DM (another process after a checkpoint resume) answers the same history identically.
    again = _dm_answer(GroundedDM(GroundedWorlds(cache)), script, actions)
    assert again == answer


def test_dm_rejects_bad_histories(scripts, worlds):
    dm = GroundedDM(worlds)
    script = scripts["custom"]
    opening = dm.respond(script, [])
    with pytest.raises(InputError, match="ends with a DM turn"):
        dm.respond(script, [opening])
    foreign = Script.model_validate(json.loads((FIXTURES / "script_unix_admin.json").read_text()))
    with pytest.raises(InputError, match="Grounding"):
        dm.respond(foreign, [])


# ---------------------------------------------------------------------------------------------- trajectories


def test_trajectories_pass_the_checker(scripts, trajectories):
    kinds_seen: set[str] = set()
    for kind, turns in trajectories.items():
        report = check_trajectory(scripts[kind], Trajectory(turns=turns))
        assert report.ok, f"{kind}: {report.summary()}"
        assert report.pairs >= 2
        assert [t.turn for t in turns] == list(range(1, len(turns) + 1))
        assert [t.role for t in turns] == ["DM", "Player"] * (len(turns) // 2) + ["DM"]
        assert turns[-1].task_completed is True
        assert all(t.task_completed is None for t in turns[:-1])
        kinds_seen.update(flag for t in turns if t.is_dm for flag in t.flags)
    assert kinds_seen == {"parameter_error", "place_error", "logic_error"}


def test_refinements_cite_the_feedback_and_never_repeat(trajectories, scripts):
    for kind, turns in trajectories.items():
        failed: list[str] = []
        for i, turn in enumerate(turns):
            if turn.is_dm and turn.flagged:
                bad, refine = turns[i - 1], turns[i + 1]
                assert cite(turn.observation) in refine.thought  # quotes the DM
                assert refine.action != bad.action
                assert match_action(scripts[kind], refine.action).ok
                assert not turns[i + 2].flagged  # the refinement is accepted: no two mistakes in a row
                failed.append(bad.action)
        assert len(failed) == len(set(failed)) >= 2


def test_synthesis_is_deterministic_per_seed(cache, scripts):
    persona = PERSONAS["treasure_hunter"]
    first = synthesize_grounded(persona, seed=3, cache_dir=cache)
    second = synthesize_grounded(persona, seed=3, cache_dir=cache)
    assert first[0] == second[0]
    assert [t.to_paper() for t in first[1]] == [t.to_paper() for t in second[1]]
    other = synthesize_grounded(persona, seed=4, cache_dir=cache)[1]
    assert [t.to_paper() for t in other] != [t.to_paper() for t in first[1]]


def test_player_settings_control_the_number_of_mistakes(cache, scripts):
    teacher = grounded_teacher(cache, seed=1, min_errors=2, max_errors=2)
    _, turns = synthesize_grounded(PERSONAS["custom"], teacher=teacher)
    assert sum(1 for t in turns if t.is_dm and t.flagged) == 2
    with pytest.raises(ValueError):
        GroundedPlayer(min_errors=3, max_errors=2, cache_dir=cache)


def test_roles_follow_the_protocols(cache, scripts):
    writer, player, dm = grounded_teacher(cache)
    assert isinstance(writer, roles.ScriptWriter)
    assert isinstance(player, roles.Player) and isinstance(dm, roles.DM)

    async def run():
        script, usage = await writer.awrite_script(PERSONAS["custom"], [])
        opening, dm_usage = await dm.arespond(script, [])
        move, player_usage = await player.aact(script, [opening])
        return script, usage, dm_usage, player_usage, move

    script, *usages, move = asyncio.run(run())
    assert script == scripts["custom"]
    assert all(u.total_tokens == 0 and u.calls == 0 for u in usages)
    assert move.role == "Player" and move.turn == 2 and move.action


def test_textworld_env_speaks_the_env_contract(scripts, worlds):
    script = scripts["treasure_hunter"]
    env = TextWorldEnv(script, worlds)
    assert env.reset().startswith(script.goal[:30])
    assert env.step("fly away").error == "parameter_error"
    steps = 0
    while (action := env.oracle_action()) is not None:
        assert action in env.valid_actions()
        result = env.step(action)
        assert result.error is None
        steps += 1
    assert result.done and result.progress == 1.0 and steps >= 3


@pytest.mark.parametrize("kind", ["parameter_error", "place_error", "logic_error"])
def test_error_injection_on_a_grounded_world_is_flagged_as_its_kind_and_an_oracle_recovers(scripts, worlds, kind):
    """issue 16's evaluation: a mistake of the named kind replaces the agent's action at step 2, the engine flags
    it as that kind, and an agent that follows the engine's plan recovers (accepted, not the mistake again)."""
    from agentrefine_lg.eval.agents import make_agent
    from agentrefine_lg.eval.injection import InjectingModel, Injection, injection_outcome
    from agentrefine_lg.refine_agent import run_env_episode

    env = TextWorldEnv(scripts["treasure_hunter"], worlds)
    injection = Injection(kind, step=2)
    model = InjectingModel(inner=make_agent("oracle", env, seed=0), env=env, injection=injection)
    result = run_env_episode(model, env, max_steps=30)
    outcome = injection_outcome(result.turns, injection, model.injected, result.success)
    assert model.injected and outcome["applied"], model.unavailable
    assert kind in outcome["flags"]
    assert outcome["recovered"] and not outcome["repeated"] and outcome["success_after"]
