"""The TextWorld adapter: the only module of the grounded teacher that imports ``textworld``.

It generates seeded games (custom quests, cooking, treasure hunter, coin collector) into a cache
directory, describes a game engine-neutrally (:class:`GameInfo`: entities, action forms, quest
conditions, walkthrough) and plays it (:class:`TextWorldGame`, a :class:`~agentrefine_lg.env.TextEnv`).
Everything else in :mod:`agentrefine_lg.synthesis.grounded` sees only these neutral structures, so another engine
can replace TextWorld by providing the same three things.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import re
import tempfile
import threading
import warnings
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agentrefine_lg.errors import AgentRefineError

DIRECTIONS: tuple[str, ...] = ("north", "south", "east", "west")
GAME_KINDS: tuple[str, ...] = ("custom", "cooking", "treasure_hunter", "coin_collector")
# Custom quests and cooking give the richest worlds (containers, doors, recipes), so they come up most.
KIND_WEIGHTS: dict[str, float] = {"custom": 0.35, "cooking": 0.3, "treasure_hunter": 0.2, "coin_collector": 0.15}
DEFAULT_CACHE_DIR = "~/.cache/agentrefine/textworld"
ENGINE_NAME = "textworld"

_CHALLENGE = {"cooking": "tw-cooking", "treasure_hunter": "tw-treasure_hunter", "coin_collector": "tw-coin_collector"}
_OPPOSITE = {"north": "south", "south": "north", "east": "west", "west": "east"}


def resolve_cache_dir(cache_dir: str | os.PathLike | None = None) -> Path:
    """The game cache: ``cache_dir``, else ``$AGENTREFINE_TEXTWORLD_CACHE``, else ``~/.cache/agentrefine/textworld``."""
    raw = cache_dir or os.environ.get("AGENTREFINE_TEXTWORLD_CACHE") or DEFAULT_CACHE_DIR
    return Path(raw).expanduser()


# ---------------------------------------------------------------------------------------------- game specs


@dataclass(frozen=True)
class GameSpec:
    """What to generate: a game kind, a seed and the kind's difficulty settings. Same spec, same game."""

    kind: str
    seed: int
    settings: tuple[tuple[str, Any], ...] = ()
    min_steps: int = 3  # a shorter walkthrough leaves too few places for mistakes: re-seed

    def __post_init__(self) -> None:
        if self.kind not in GAME_KINDS:
            raise ValueError(f"unknown game kind {self.kind!r}: expected one of {', '.join(GAME_KINDS)}")

    @property
    def stem(self) -> str:
        """File name (without extension) of this game in the cache."""
        digest = hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:8]
        return f"{self.kind}-{self.seed}-{digest}"

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "seed": self.seed, "settings": dict(self.settings), "min_steps": self.min_steps}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GameSpec:
        return cls(
            kind=data["kind"],
            seed=int(data["seed"]),
            settings=tuple(sorted((data.get("settings") or {}).items())),
            min_steps=int(data.get("min_steps", 3)),
        )


def persona_seed(persona: str, variant: int = 0) -> int:
    """A 31-bit seed from the persona text (whitespace/case-insensitive) and a variant number."""
    norm = " ".join(persona.lower().split())
    return int(hashlib.sha256(f"{norm}#{variant}".encode()).hexdigest()[:8], 16) & 0x7FFFFFFF


def spec_for_persona(
    persona: str, variant: int = 0, *, kinds: Iterable[str] = GAME_KINDS, min_steps: int = 3
) -> GameSpec:
    """The game a persona gets: kind and difficulty drawn from a seed derived from the persona text."""
    kinds = [k for k in kinds]
    for k in kinds:
        if k not in GAME_KINDS:
            raise ValueError(f"unknown game kind {k!r}: expected one of {', '.join(GAME_KINDS)}")
    if not kinds:
        raise ValueError("kinds is empty")
    seed = persona_seed(persona, variant)
    rng = random.Random(seed)
    kind = rng.choices(kinds, weights=[KIND_WEIGHTS[k] for k in kinds])[0]
    if kind == "custom":
        settings = {"nb_rooms": rng.randint(2, 6), "nb_objects": rng.randint(4, 12), "quest_length": rng.randint(3, 7)}
    elif kind == "cooking":
        recipe = rng.randint(1, 3)
        settings = {
            "recipe": recipe, "take": rng.randint(1, recipe), "go": rng.choice([6, 9]),
            "open": rng.random() < 0.7, "cook": rng.random() < 0.6, "cut": rng.random() < 0.6,
            "drop": False, "recipe_seed": rng.randint(1, 10_000), "split": None,
        }
    elif kind == "treasure_hunter":
        # Levels 1-5 and 11-12 give 1-2 step quests; above 25 the walks get long.
        settings = {"level": rng.choice([*range(6, 11), *range(13, 26)])}
    else:
        settings = {"level": rng.randint(3, 15)}  # the walk grows with the level: keep episodes trainable
    return GameSpec(kind, seed, tuple(sorted(settings.items())), min_steps)


def _require_textworld() -> None:
    """A clear error instead of a bare ImportError deep in a run."""
    try:
        import textworld  # noqa: F401
    except ImportError as exc:
        raise AgentRefineError(
            "the embedded grounded teacher needs TextWorld: pip install 'textworld>=1.7' "
            f"(or an LLM teacher: --teacher / --base-url); import failed: {exc}"
        ) from None


# Jericho warns that TextWorld's own games are "not fully supported" (true for jericho; TextWorld tracks
# their state). The filter is installed once, here: ``warnings.catch_warnings`` per call would swap the
# process-wide filter list from worker threads and lose other threads' filters.
warnings.filterwarnings("ignore", message=r".*is not fully supported")

# TextWorld is not thread-safe: its logic/grammar parsers keep shared state, so a game being generated,
# loaded (``Game.load``) or started on one thread makes another fail with ``IndexError: pop from empty
# list`` or ``FailedParse``. Every call that parses goes through this one lock; stepping a started game
# does not parse and runs outside it. (No stdout redirection either: ``sys.stdout`` is process-wide, and
# swapping it from a worker thread swallowed other threads' output.)
_TEXTWORLD_LOCK = threading.RLock()


class NoUsableGameError(AgentRefineError):
    """TextWorld made no usable game from a spec's seeds (generator errors, too short a quest, confusable names,
    or a failed Inform 7 compile): the world is skipped, not a bug."""


def _make(spec: GameSpec):
    """Build the textworld.Game (not compiled), re-seeding until the walkthrough is long enough."""
    _require_textworld()
    from textworld import GameOptions
    from textworld.challenges import CHALLENGES
    from textworld.generator import make_game

    settings = dict(spec.settings)
    last = 0
    failure: Exception | None = None
    for bump in range(12):
        opts = GameOptions()
        opts.seeds = (spec.seed + 7919 * bump) & 0x7FFFFFFF
        if "recipe_seed" in settings:
            settings["recipe_seed"] = int(dict(spec.settings)["recipe_seed"]) + bump
        if "level" in settings and bump >= 4 and last < spec.min_steps:
            settings["level"] = int(settings["level"]) + 1  # this level keeps giving too short quests
        try:
            if spec.kind == "custom":
                opts.nb_rooms = int(settings.get("nb_rooms", 4))
                opts.nb_objects = int(settings.get("nb_objects", 8))
                opts.quest_length = int(settings.get("quest_length", 4))
                opts.quest_breadth = 1
                game = make_game(opts)
            else:
                game = CHALLENGES[_CHALLENGE[spec.kind]][1](settings, opts)
        except Exception as exc:  # noqa: BLE001 - TextWorld raises assorted errors (QuestGenerationError, ValueError...)
            # TextWorld's generators fail on some seed/setting combinations (e.g. a recipe whose food has
            # no allowed preparation, or no quest of the asked length): the next seed usually works.
            failure = exc
            continue
        last = len(game.metadata.get("walkthrough") or [])
        if last >= spec.min_steps and not ambiguous_names(game):
            return game, opts
    raise NoUsableGameError(f"{spec.kind} game with seed {spec.seed} and settings {settings}: no usable game in "
                            f"12 seeds (walkthrough shorter than {spec.min_steps} steps (last {last}), names the "
                            f"parser confuses, or generator errors (last: {failure!r}))")


def ambiguous_names(game: Any) -> tuple[str, str] | None:
    """Two object names the game's parser cannot tell apart, if any: when every word of one name is in the
    other ("box" and "American limited edition box") and both can be in the same room, typing the first
    gets "Which do you mean ...?" instead of an action, although TextWorld lists the command as admissible.
    Such games are re-seeded. Fixed furniture in different rooms ("table", "patio table") is fine: the
    parser only considers what is in scope."""
    types = game.kb.types
    named = {eid: info for eid, info in game.infos.items() if info.name and str(info.type) not in ("r", "P", "I")}
    rooms: dict[str, set[str]] = {}
    for prop in game.world.facts:
        args = [v.name for v in prop.arguments]
        if prop.name == "at" and len(args) == 2:
            rooms.setdefault(args[0], set()).add(args[1])
        elif prop.name == "link" and len(args) == 3:
            rooms.setdefault(args[1], set()).update((args[0], args[2]))

    def movable(eid: str) -> bool:
        t = str(named[eid].type)
        return t == "o" or types.is_descendant_of(t, "o") or eid not in rooms

    words = {eid: set(info.name.lower().split()) for eid, info in named.items()}
    for a, info_a in named.items():
        for b, info_b in named.items():
            if a == b or not words[a] <= words[b]:
                continue
            if movable(a) or movable(b) or rooms[a] & rooms[b]:
                return info_a.name, info_b.name
    return None


def generate_game(spec: GameSpec, cache_dir: str | os.PathLike | None = None) -> Path:
    """The compiled game file (``.z8`` with its ``.json``) for ``spec``, generated once into the cache.

    Files are written to a temporary folder and moved into place, so concurrent runs never see half a game.
    """
    _require_textworld()
    from textworld.generator import compile_game
    from textworld.generator.inform7.world2inform7 import CouldNotCompileGameError

    cache = resolve_cache_dir(cache_dir)
    cache.mkdir(parents=True, exist_ok=True)
    z8, js = cache / f"{spec.stem}.z8", cache / f"{spec.stem}.json"
    if z8.is_file() and js.is_file():
        return z8
    with _TEXTWORLD_LOCK:
        if z8.is_file() and js.is_file():
            return z8
        game, opts = _make(spec)
        with tempfile.TemporaryDirectory(dir=cache, prefix=".gen-") as tmp:
            opts.path = str(Path(tmp) / f"{spec.stem}.z8")
            opts.force_recompile = True
            try:
                compile_game(game, opts)
            except CouldNotCompileGameError as exc:
                raise NoUsableGameError(f"{spec.stem}: Inform 7 could not compile this game ({exc})") from exc
            # The .json first: a present .z8 promises a complete game.
            os.replace(Path(tmp) / f"{spec.stem}.json", js)
            os.replace(Path(tmp) / f"{spec.stem}.z8", z8)
    return z8


# ---------------------------------------------------------------------------------------------- world state

Fact = tuple[str, tuple[str, ...]]


def _facts(props: Iterable[Any], namer: dict[str, str] | None = None) -> frozenset[Fact]:
    """TextWorld propositions as ``(predicate, (arg names...))``; ``namer`` maps ids to names."""
    out = []
    for p in props:
        args = tuple((namer or {}).get(v.name, v.name) for v in p.arguments)
        out.append((p.name, args))
    return frozenset(out)


@dataclass
class WorldState:
    """An engine-neutral snapshot: where everything is, what is open, the exits, the engine's lists."""

    facts: frozenset[Fact]
    admissible: frozenset[str] = frozenset()
    policy: tuple[str, ...] = ()
    won: bool = False
    lost: bool = False
    feedback: str = ""
    score: int = 0
    room: str | None = None
    holder: dict[str, tuple[str, str]] = field(default_factory=dict)  # entity -> (relation, holder)
    exits: dict[str, dict[str, str]] = field(default_factory=dict)  # room -> direction -> room
    doors: dict[str, set[str]] = field(default_factory=dict)  # door -> the rooms it links
    door_at: dict[tuple[str, str], str] = field(default_factory=dict)  # (room, direction) -> door
    unary: set[Fact] = field(default_factory=set)

    @classmethod
    def from_facts(cls, facts: frozenset[Fact], **kwargs: Any) -> WorldState:
        state = cls(facts=facts, **kwargs)
        links: list[tuple[str, str, str]] = []
        for pred, args in facts:
            if pred == "at" and args[0] == "P":
                state.room = args[1]
            elif pred in ("at", "in", "on") and len(args) == 2:
                state.holder[args[0]] = (pred, args[1])
            elif pred in ("north_of", "south_of", "east_of", "west_of"):
                # north_of(a, b): a lies north of b, so going north from b leads to a.
                direction = pred[: -len("_of")]
                state.exits.setdefault(args[1], {})[direction] = args[0]
            elif pred == "link":
                links.append(args)
            elif len(args) == 1:
                state.unary.add((pred, args))
        for a, door, b in links:
            state.doors.setdefault(door, set()).update((a, b))
            for direction, dest in state.exits.get(a, {}).items():
                if dest == b:
                    state.door_at[(a, direction)] = door
        return state

    def has(self, pred: str, entity: str) -> bool:
        return (pred, (entity,)) in self.unary

    @property
    def inventory(self) -> list[str]:
        return sorted(e for e, (rel, h) in self.holder.items() if h == "I")

    def container_of(self, entity: str) -> str | None:
        rel = self.holder.get(entity)
        return rel[1] if rel else None

    def room_of(self, entity: str) -> str | None:
        """The room an entity is in ('I' when carried), following containers and supporters."""
        if entity in self.doors:
            return self.room if self.room in self.doors[entity] else min(self.doors[entity])
        seen = set()
        while entity in self.holder and entity not in seen:
            seen.add(entity)
            rel, holder = self.holder[entity]
            if holder == "I" or rel == "at":
                return holder
            entity = holder
        return None

    def exists(self, entity: str) -> bool:
        """Whether the entity is somewhere in the world now (eaten food and unprepared meals are not)."""
        return entity in self.doors or self.room_of(entity) is not None

    def reachable(self, entity: str) -> bool:
        """Whether the entity is where the player is: carried, in the current room, or a door of it."""
        if entity in self.doors:
            return self.room in self.doors[entity]
        return self.room_of(entity) in ("I", self.room)

    def where(self, entity: str) -> str:
        """Human words for an entity's location, e.g. 'the fridge in the kitchen'."""
        rel = self.holder.get(entity)
        room = self.room_of(entity)
        if room == "I":
            return "your inventory"
        if entity in self.doors:
            return "between the " + " and the ".join(sorted(self.doors[entity]))
        if rel is None or room is None:
            return "nowhere"
        if rel[0] == "at":
            return f"in the {room}"
        prep = "on" if rel[0] == "on" else "in"
        return f"{prep} the {rel[1]} in the {room}"


def clean_feedback(text: str) -> str:
    """Engine output without the prompt/status line, the end-of-game menu and blank-line runs."""
    text = re.split(r"\n>[^\n]*$", text.rstrip(), maxsplit=1)[0]
    text = text.split("Would you like to RESTART", 1)[0]
    lines = [line.strip() for line in text.splitlines()]
    out: list[str] = []
    for line in lines:
        if line or (out and out[-1]):
            out.append(line)
    return "\n".join(out).strip()


# ---------------------------------------------------------------------------------------------- game info


@dataclass
class ActionForm:
    """One action of the game's grammar with engine-neutral slot names and the game's entity names."""

    template: str
    verb: str
    parameters: dict[str, list[str]]
    instruments: tuple[str, ...] = ()  # slots for held tools/keys: not checked for place


@dataclass
class GameInfo:
    """Everything needed to write the script of a game, without engine objects."""

    name: str
    kind: str
    objective: str
    walkthrough: list[str]
    rooms: list[str]
    categories: dict[str, str]  # entity name -> item/food/key/container/supporter/door/appliance/...
    initial: WorldState
    win: list[list[list[Fact]]]  # per quest, its alternative win events, each a list of facts that must hold
    fail: list[Fact]  # facts that lose the game
    forms: list[ActionForm]
    max_score: int = 0


_CATEGORY = {"o": "item", "f": "food", "k": "key", "c": "container", "s": "supporter", "d": "door",
             "oven": "appliance", "stove": "appliance", "toaster": "appliance", "meal": "food", "t": "thing"}
_APPLIANCES = {"oven", "stove", "toaster"}


def _slot_name(types: set[str], *, after_with: bool, verb: str) -> str:
    if "t" in types:
        return "thing"
    if types <= _APPLIANCES:
        return "appliance"
    if types == {"c", "d"}:
        return "door_or_container"
    if types == {"c", "s"}:
        return "container_or_supporter"
    if types == {"k"} or (after_with and verb in ("lock", "unlock")):
        return "key"
    if after_with and types == {"o"}:
        return "tool"
    names = sorted({_CATEGORY.get(t, t) for t in types})
    return "_or_".join(names)


def _action_forms(game: Any, names_by_type: dict[str, list[str]]) -> list[ActionForm]:
    """Merge the knowledge base's command templates (``take {o} from {c}``, ``take {o} from {s}``...) by
    surface form, so each action appears once with one verification regex and the union of values."""
    types = game.kb.types

    def values_for(t: str) -> list[str]:
        out: list[str] = []
        for etype, names in names_by_type.items():
            if etype == t or types.is_descendant_of(etype, t):
                out.extend(names)
        return out

    groups: OrderedDict[str, list[set[str]]] = OrderedDict()
    for command in game.kb.inform7_commands.values():
        if re.fullmatch(r"go (north|south|east|west)", command):
            continue
        slots = re.findall(r"\{(\w+)\}", command)
        surface = re.sub(r"\{\w+\}", "{}", command)
        merged = groups.setdefault(surface, [set() for _ in slots])
        for i, t in enumerate(slots):
            merged[i].add(t)
    forms = [ActionForm("go {direction}", "go", {"direction": list(DIRECTIONS)})]
    for surface, slot_types in groups.items():
        verb = surface.split()[0]
        parts = surface.split("{}")
        names: list[str] = []
        params: dict[str, list[str]] = {}
        instruments: list[str] = []
        for i, ts in enumerate(slot_types):
            after_with = parts[i].strip().endswith("with")
            name = _slot_name(ts, after_with=after_with, verb=verb)
            while name in params:
                name += "2"
            values = sorted({v for t in ts for v in values_for(t)})
            names.append(name)
            params[name] = values
            if name in ("key", "tool"):
                instruments.append(name)
        if any(not v for v in params.values()):
            continue  # the game has nothing this action could apply to
        template = surface.format(*("{" + n + "}" for n in names))
        forms.append(ActionForm(template, verb, params, tuple(instruments)))
    return forms


def load_game_info(game_file: str | os.PathLike) -> GameInfo:
    """Read a generated game's ``.json`` into a :class:`GameInfo`."""
    _require_textworld()
    import textworld

    path = Path(game_file)
    with _TEXTWORLD_LOCK:
        game = textworld.Game.load(str(path.with_suffix(".json")))
    namer = {eid: info.name for eid, info in game.infos.items() if info.name}
    names_by_type: dict[str, list[str]] = {}
    categories: dict[str, str] = {}
    rooms: list[str] = []
    for info in game.infos.values():
        etype = str(info.type)
        if not info.name or etype in ("P", "I"):
            continue
        if etype == "r":
            rooms.append(info.name)
            continue
        names_by_type.setdefault(etype, []).append(info.name)
        categories[info.name] = _CATEGORY.get(etype, etype)
    initial = WorldState.from_facts(_facts(game.world.facts, namer))
    win: list[list[list[Fact]]] = []
    fail: list[Fact] = []
    for quest in game.quests:
        alternatives = [sorted(_facts(event.condition.preconditions, namer)) for event in quest.win_events]
        alternatives = [a for a in alternatives if a]
        if alternatives:  # quests without win events (e.g. "read the cookbook") set no condition
            win.append(alternatives)
        for event in quest.fail_events:
            fail.extend(_facts(event.condition.preconditions, namer))
    kind = path.stem.split("-", 1)[0]
    return GameInfo(
        name=path.stem,
        kind=kind if kind in GAME_KINDS else "custom",
        objective=" ".join((game.objective or "").split()),
        walkthrough=list(game.metadata.get("walkthrough") or []),
        rooms=sorted(rooms),
        categories=categories,
        initial=initial,
        win=win,
        fail=sorted(set(fail)),
        forms=_action_forms(game, names_by_type),
        max_score=int(game.max_score or 0),
    )


# ---------------------------------------------------------------------------------------------- playing


class TextWorldSession:
    """One running engine for a game file, kept in sync with a list of accepted commands.

    ``sync(commands)`` brings the engine to the state after exactly those commands: it steps forward when
    they extend what was applied and otherwise resets and replays (a step costs ~1-15 ms). A command whose
    effect must be undone (a refused or game-losing action) marks the engine dirty; the next sync replays.
    """

    def __init__(self, game_file: str | os.PathLike):
        _require_textworld()
        import textworld

        self.path = Path(game_file)
        if not self.path.is_file() or not self.path.with_suffix(".json").is_file():
            raise FileNotFoundError(f"game file {self.path} (and its .json) not found")
        self._infos = textworld.EnvInfos(
            admissible_commands=True, policy_commands=True, description=True, inventory=True,
            objective=True, won=True, lost=True, facts=True, score=True, max_score=True,
            extras=["walkthrough"],
        )
        with _TEXTWORLD_LOCK:
            self._env = textworld.start(str(self.path), request_infos=self._infos)
        self.applied: list[str] = []
        self._dirty = True
        self.state: WorldState = WorldState(frozenset())
        self.opening = ""
        self.initial: WorldState | None = None  # the state after the first reset (start of the game)
        self.lock = threading.RLock()

    def _snapshot(self, gs: Any, feedback: str) -> WorldState:
        return WorldState.from_facts(
            _facts(gs.facts or []),
            admissible=frozenset(gs.admissible_commands or []),
            policy=tuple(gs.policy_commands or []),
            won=bool(gs.won), lost=bool(gs.lost), feedback=feedback, score=int(gs.score or 0),
        )

    def reset(self) -> WorldState:
        with _TEXTWORLD_LOCK:  # a reset reloads the game's data
            gs = self._env.reset()
        self.opening = f"{' '.join((gs.objective or '').split())}\n\n{clean_feedback(gs.description or '')}".strip()
        self.state = self._snapshot(gs, self.opening)
        if self.initial is None:
            self.initial = self.state
        self.applied = []
        self._dirty = False
        return self.state

    def raw_step(self, command: str) -> WorldState:
        """Step the engine; the caller decides whether to keep the result (``commit``) or undo it."""
        if self._dirty:
            self.sync(list(self.applied))
        gs, _, _ = self._env.step(command)
        self._dirty = True  # until committed
        return self._snapshot(gs, clean_feedback(gs.feedback or "") or "Nothing happens.")

    def commit(self, command: str, state: WorldState) -> None:
        self.applied.append(command)
        self.state = state
        self._dirty = False

    def undo(self) -> None:
        """Forget the last raw step: the engine is replayed lazily before it is used again."""
        self._dirty = True

    def sync(self, commands: list[str]) -> WorldState:
        if not self._dirty and commands[: len(self.applied)] == self.applied:
            start = len(self.applied)
        else:
            self.reset()
            start = 0
        for command in commands[start:]:
            gs, _, _ = self._env.step(command)
            self.applied.append(command)
            self.state = self._snapshot(gs, clean_feedback(gs.feedback or ""))
        self._dirty = False
        return self.state

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._env.close()


class SessionPool:
    """A few open engines, least recently used closed first (each holds a Z-machine and game data)."""

    def __init__(self, max_open: int = 8):
        self.max_open = max_open
        self._open: OrderedDict[str, TextWorldSession] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, game_file: str | os.PathLike) -> TextWorldSession:
        key = str(Path(game_file).resolve())
        with self._lock:
            session = self._open.pop(key, None)
            if session is None:
                session = TextWorldSession(key)
            self._open[key] = session
            while len(self._open) > self.max_open:
                _, old = self._open.popitem(last=False)
                old.close()
            return session

    def close(self) -> None:
        with self._lock:
            for session in self._open.values():
                session.close()
            self._open.clear()


__all__ = [
    "DIRECTIONS",
    "ENGINE_NAME",
    "GAME_KINDS",
    "ActionForm",
    "GameInfo",
    "GameSpec",
    "NoUsableGameError",
    "SessionPool",
    "TextWorldSession",
    "WorldState",
    "ambiguous_names",
    "clean_feedback",
    "generate_game",
    "load_game_info",
    "persona_seed",
    "resolve_cache_dir",
    "spec_for_persona",
]
