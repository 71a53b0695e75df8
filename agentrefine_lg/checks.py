"""Rule-based verification of scripts and trajectories (docs/method.md §2-§4).

``check_script`` finds faults of the script (regenerate the *script*); ``check_trajectory`` finds faults of
the trajectory (regenerate the *trajectory*, from ``verified_prefix``) and counts error->refine pairs.

Every ``verification code`` is untrusted LLM text (docs/method.md §4). It is only ever compiled by the ``regex``
engine and matched with a timeout; patterns with nested unbounded quantifiers (``^(a+)+$``), which
backtracking engines can take exponential time on, are refused before they run. Nothing is evaluated.
"""

from __future__ import annotations

import re._parser as sre_parse  # only to *inspect* the pattern's structure; never used to match
import time
from collections.abc import Callable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from functools import lru_cache, wraps
from typing import Any, Literal

import regex
from pydantic import ValidationError

from agentrefine_lg.schema import ERROR_FLAGS, ActionSpec, Script, Trajectory, Turn, template_slots

Blame = Literal["script", "trajectory"]

MAX_PATTERN_CHARS = 1000
MATCH_TIMEOUT_S = 0.25
RECORD_REGEX_BUDGET_S = 2.0
"""Total regex time one record (a script's check, a trajectory's check) may spend; past it the remaining
matches fail as ``regex_budget`` (a script fault) instead of running."""
# Probe strings a script's regexes must survive quickly: the classic blow-ups for (a+)+, (\w+\s?)*, (.*)*.
# They are also tried behind the pattern's own text (see _pattern_probes): a literal prefix ("^shout ")
# would otherwise reject them at once and let an exponential body like ((?:a|aa)*c) through.
_PROBES = ("a" * 30 + "b", "go " * 20 + "!", " " * 40 + "x\n", "x" * 500)
_PUMP = 40  # repeats per unbounded quantifier in a pattern-built probe: 2**40 paths time out, linear ones don't
_BUDGET: ContextVar[list[float] | None] = ContextVar("agentrefine_regex_budget", default=None)
_SLOW: set[str] = set()  # patterns that timed out once: refused at once afterwards (process-wide)
_PREEMPTED_RETRIES = 3  # retries of a match whose timeout passed while the thread waited for a core


@dataclass
class Problem:
    """One finding. ``turn`` is the 0-based turn index (None for whole-document problems)."""

    kind: str
    message: str
    blame: Blame
    turn: int | None = None

    def __str__(self) -> str:
        where = f"turn {self.turn}: " if self.turn is not None else ""
        return f"[{self.blame}/{self.kind}] {where}{self.message}"


@dataclass
class CheckReport:
    """The verdict on a script or a (script, trajectory) pair."""

    problems: list[Problem] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    verified_prefix: int = 0  # leading turns that are good: a regenerated trajectory continues from here
    pairs: int = 0  # error->refine pairs
    erroneous: list[bool] = field(default_factory=list)  # per turn; True on erroneous Player turns
    turns: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def blame(self) -> Blame | None:
        """'script' when any fault is the script's (regenerate it), else 'trajectory', else None."""
        if not self.problems:
            return None
        return "script" if any(p.blame == "script" for p in self.problems) else "trajectory"

    def summary(self) -> str:
        if self.ok:
            return f"ok: {self.turns} turns, {self.pairs} error->refine pairs" if self.turns else "ok"
        head = f"{len(self.problems)} problem(s), blame={self.blame}, verified prefix {self.verified_prefix}/{self.turns}"
        return "\n".join([head, *(f"  {p}" for p in self.problems)])

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "blame": self.blame,
            "verified_prefix": self.verified_prefix,
            "pairs": self.pairs,
            "turns": self.turns,
            "erroneous": self.erroneous,
            "problems": [p.__dict__ for p in self.problems],
            "warnings": self.warnings,
        }


@dataclass
class ActionMatch:
    """Whether an action is valid under the script's available actions."""

    ok: bool
    template: str | None = None
    values: dict[str, str] = field(default_factory=dict)
    kind: Literal["no_template", "bad_value", "regex_error"] | None = None
    message: str | None = None


# ---------------------------------------------------------------------------------------------- regexes


def _unbounded(node: Any) -> bool:
    """Does this parsed sub-pattern contain an unbounded repeat?"""
    return any(_walk_repeats(node))


def _walk_repeats(items: Any):
    for op, arg in items:
        if op in (sre_parse.MAX_REPEAT, sre_parse.MIN_REPEAT, getattr(sre_parse, "POSSESSIVE_REPEAT", None)):
            lo, hi, body = arg
            yield hi == sre_parse.MAXREPEAT or hi > 50
            yield from _walk_repeats(body)
        elif op == sre_parse.SUBPATTERN:
            yield from _walk_repeats(arg[-1])
        elif op == sre_parse.BRANCH:
            for branch in arg[1]:
                yield from _walk_repeats(branch)
        elif op in (sre_parse.ASSERT, sre_parse.ASSERT_NOT):
            yield from _walk_repeats(arg[1])


def _nested_quantifier(items: Any) -> bool:
    """True if an unbounded repeat contains another unbounded repeat (star height > 1)."""
    for op, arg in items:
        if op in (sre_parse.MAX_REPEAT, sre_parse.MIN_REPEAT, getattr(sre_parse, "POSSESSIVE_REPEAT", None)):
            lo, hi, body = arg
            if (hi == sre_parse.MAXREPEAT or hi > 50) and _unbounded(body):
                return True
            if _nested_quantifier(body):
                return True
        elif op == sre_parse.SUBPATTERN and _nested_quantifier(arg[-1]) or op == sre_parse.BRANCH and any(_nested_quantifier(b) for b in arg[1]) or op in (sre_parse.ASSERT, sre_parse.ASSERT_NOT) and _nested_quantifier(arg[1]):
            return True
    return False


class RegexRefused(ValueError):
    """A verification code that cannot be used: ``kind`` names why."""

    def __init__(self, kind: str, message: str):
        self.kind = kind
        super().__init__(message)


def _char_in(items: Any) -> str:
    """A character of an ``IN`` set (a class like ``[a-z]`` or ``[^"]``)."""
    negate = False
    for op, arg in items:
        if op == sre_parse.NEGATE:
            negate = True
        elif not negate and op == sre_parse.LITERAL:
            return chr(arg)
        elif not negate and op == sre_parse.RANGE:
            return chr(arg[0])
        elif not negate and op == sre_parse.CATEGORY:
            return _CATEGORY_CHAR.get(arg, "a")
    return "a"  # a negated class: "a" is outside almost all of them, and a probe need not be exact


_CATEGORY_CHAR = {sre_parse.CATEGORY_DIGIT: "1", sre_parse.CATEGORY_SPACE: " ", sre_parse.CATEGORY_WORD: "a",
                  sre_parse.CATEGORY_NOT_DIGIT: "a", sre_parse.CATEGORY_NOT_SPACE: "a", sre_parse.CATEGORY_NOT_WORD: " "}


def _witness(items: Any, pump: int, budget: list[int]) -> str:
    """A string the parsed pattern (roughly) matches, with every unbounded repeat pumped ``pump`` times: the
    shape of input on which an ambiguous pattern backtracks the most. ``budget`` bounds its length."""
    out: list[str] = []
    for op, arg in items:
        if budget[0] <= 0:
            break
        if op == sre_parse.LITERAL:
            out.append(chr(arg))
        elif op == sre_parse.NOT_LITERAL:
            out.append("a" if chr(arg) != "a" else "b")
        elif op == sre_parse.ANY:
            out.append("a")
        elif op == sre_parse.IN:
            out.append(_char_in(arg))
        elif op == sre_parse.CATEGORY:
            out.append(_CATEGORY_CHAR.get(arg, "a"))
        elif op in (sre_parse.MAX_REPEAT, sre_parse.MIN_REPEAT, getattr(sre_parse, "POSSESSIVE_REPEAT", None)):
            lo, hi, body = arg
            times = pump if hi == sre_parse.MAXREPEAT or hi > pump else max(lo, min(hi, 1))
            out.append("".join(_witness(body, pump, budget) for _ in range(times)))
        elif op == sre_parse.SUBPATTERN:
            out.append(_witness(arg[-1], pump, budget))
        elif op == sre_parse.BRANCH:
            out.append(_witness(arg[1][0], pump, budget))
        budget[0] -= len(out[-1]) if out else 0
    return "".join(out)


def _pattern_probes(pattern: str, parsed: Any) -> list[str]:
    """The fixed probes behind the pattern's own literal start, and the pattern's pumped witness followed by a
    character that makes the full match fail (forcing every way of splitting the pumped part to be tried)."""
    witness = _witness(list(parsed), _PUMP, [20_000])
    start = _witness(list(parsed), 1, [20_000])
    probes = [witness + "\x00", witness[:-1] + "\x00" if witness else "\x00"]
    prefix = ""
    for op, arg in parsed:  # the literal text every match starts with
        if op == sre_parse.AT:
            continue
        if op != sre_parse.LITERAL:
            break
        prefix += chr(arg)
    if prefix or start:
        probes += [prefix + p for p in _PROBES]
    return probes


@lru_cache(maxsize=4096)
def compile_verification(pattern: str) -> regex.Pattern:
    """Compile an LLM-written ``verification code`` safely, or raise :class:`RegexRefused`."""
    if not isinstance(pattern, str) or not pattern.strip():
        raise RegexRefused("regex_empty", "verification code is empty")
    if len(pattern) > MAX_PATTERN_CHARS:
        raise RegexRefused("regex_too_long", f"verification code is {len(pattern)} chars (max {MAX_PATTERN_CHARS})")
    if pattern in _SLOW:  # refusals are not cached by lru_cache: do not pay the probes again
        raise RegexRefused("regex_timeout", f"verification code {pattern!r} is too slow on adversarial input")
    try:
        parsed = sre_parse.parse(pattern)
    except Exception as exc:  # re's own parser: bad syntax for Python regexes
        raise RegexRefused("regex_compile", f"verification code does not compile: {exc}") from None
    if _nested_quantifier(list(parsed)):
        raise RegexRefused(
            "regex_unsafe",
            f"verification code {pattern!r} nests unbounded quantifiers (catastrophic backtracking risk)",
        )
    try:
        compiled = regex.compile(pattern, flags=regex.VERSION0)
    except Exception as exc:
        raise RegexRefused("regex_compile", f"verification code does not compile: {exc}") from None
    for probe in (*_PROBES, *_pattern_probes(pattern, parsed)):
        try:
            _fullmatch(compiled, probe)
        except RegexRefused as exc:
            if exc.kind == "regex_timeout":
                raise RegexRefused("regex_timeout", f"verification code {pattern!r} is too slow on adversarial input") from None
            raise
    return compiled


def _fullmatch(compiled: regex.Pattern, text: str) -> regex.Match | None:
    """``compiled.fullmatch(text)`` bounded by :data:`MATCH_TIMEOUT_S` and by the record's remaining budget
    (:func:`bounded_regex_time`). A pattern that timed out once is refused at once from then on, so a long
    trajectory of slow actions costs one timeout, not one per turn.

    The regex module's timeout is wall-clock time; what counts against a pattern is the CPU time this thread
    spent matching. A timeout during which the thread mostly waited for a core (a loaded machine, many episodes
    in threads) is retried, and never marks the pattern slow: under contention ``^look$`` once timed out, and
    every later action of the process was refused."""
    if compiled.pattern in _SLOW:
        raise RegexRefused("regex_timeout", f"verification code {compiled.pattern!r} timed out before (too slow)")
    budget = _BUDGET.get()
    for attempt in range(_PREEMPTED_RETRIES + 1):
        timeout = MATCH_TIMEOUT_S if budget is None else min(MATCH_TIMEOUT_S, budget[0])
        if timeout <= 0:
            raise RegexRefused("regex_budget", f"this record spent its {RECORD_REGEX_BUDGET_S:g} s of regex time")
        started = time.thread_time()
        try:
            return compiled.fullmatch(text, timeout=timeout)
        except TimeoutError:
            matched_for = time.thread_time() - started
            if matched_for < timeout / 2 and attempt < _PREEMPTED_RETRIES:
                continue  # the thread waited for a core most of the time: not the pattern's fault
            if timeout >= MATCH_TIMEOUT_S and matched_for >= timeout / 2:
                _SLOW.add(compiled.pattern)
            raise RegexRefused("regex_timeout",
                               f"verification code {compiled.pattern!r} timed out on {text[:60]!r}") from None
        finally:
            if budget is not None:
                budget[0] -= time.thread_time() - started
    raise AssertionError("unreachable")  # pragma: no cover


def bounded_regex_time(func: Callable[..., Any]) -> Callable[..., Any]:
    """Give each call of ``func`` (one record's check) :data:`RECORD_REGEX_BUDGET_S` of regex time in total;
    nested calls share the outer call's budget."""

    @wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if _BUDGET.get() is not None:
            return func(*args, **kwargs)
        token = _BUDGET.set([RECORD_REGEX_BUDGET_S])
        try:
            return func(*args, **kwargs)
        finally:
            _BUDGET.reset(token)

    return wrapper


# ---------------------------------------------------------------------------------------------- actions


def _actions_of(script_or_actions: Script | Mapping[str, ActionSpec | dict]) -> dict[str, ActionSpec]:
    if isinstance(script_or_actions, Script):
        return script_or_actions.available_actions
    out: dict[str, ActionSpec] = {}
    for key, spec in script_or_actions.items():
        spec = spec if isinstance(spec, ActionSpec) else ActionSpec.model_validate(spec)
        spec.template = spec.template or key
        out[key] = spec
    return out


def normalize_action(action: str) -> str:
    """Collapse whitespace: ``'  cd   project '`` -> ``'cd project'``."""
    return " ".join(action.split())


def match_action(script_or_actions: Script | Mapping[str, ActionSpec | dict], action: str) -> ActionMatch:
    """Is ``action`` valid: does some template's regex fully match it with every captured value allowed?"""
    if not isinstance(action, str) or not action.strip():
        return ActionMatch(False, kind="no_template", message="empty action")
    text = action.strip()
    near: ActionMatch | None = None
    for template, spec in _actions_of(script_or_actions).items():
        try:
            compiled = compile_verification(spec.verification_code)
            m = _fullmatch(compiled, text)
        except RegexRefused as exc:
            near = near or ActionMatch(False, template, kind="regex_error", message=f"{template!r}: {exc}")
            continue
        if m is None:
            continue
        slots = template_slots(template) or list(spec.parameters)
        groups = list(m.groups())
        values: dict[str, str] = {}
        bad: list[str] = []
        for i, slot in enumerate(slots):
            value = groups[i] if i < len(groups) else None
            if value is None:
                bad.append(f"no value for {{{slot}}}")
                continue
            value = normalize_action(value)
            values[slot] = value
            allowed = spec.parameters.get(slot)
            if allowed is not None and value not in {normalize_action(a) for a in allowed}:
                bad.append(f"{value!r} is not an allowed {{{slot}}} (allowed: {', '.join(allowed[:12])}"
                           f"{', ...' if len(allowed) > 12 else ''})")
        if not bad:
            return ActionMatch(True, template, values)
        if near is None or near.kind != "bad_value":
            near = ActionMatch(False, template, values, kind="bad_value", message=f"{template!r}: " + "; ".join(bad))
    if near is not None:
        return near
    return ActionMatch(False, kind="no_template", message=f"{text!r} matches no available action")


# ---------------------------------------------------------------------------------------------- erroneous turns


@dataclass
class TurnJudgement:
    """One Player turn judged: the rules' match, the DM's answer and flags, and the verdict."""

    index: int
    match: ActionMatch
    answer: Turn | None
    flagged: bool
    erroneous: bool


def judge_player_turns(script: Script, turns: list[Turn], *, dm_authoritative: bool = False) -> list[TurnJudgement]:
    """Which Player turns are erroneous — the one decision that gives a turn no loss (docs/method.md §2).

    A turn is erroneous when the DM's answer flags it, or when the rules reject its action. Rules that cannot
    judge (a verification code that is refused or times out) abstain, and the DM decides. With
    ``dm_authoritative`` (recorded refine-agent episodes: the DM was the engine or the tools) the DM's flags
    alone decide. :func:`check_trajectory` reports these verdicts; conversion masks by them.
    """
    out: list[TurnJudgement] = []
    for i, turn in enumerate(turns):
        if not turn.is_player:
            continue
        answer = turns[i + 1] if i + 1 < len(turns) and turns[i + 1].is_dm else None
        match = match_action(script, turn.action or "")
        flagged = bool(answer and answer.flagged)
        rules_reject = not match.ok and match.kind != "regex_error" and not dm_authoritative
        out.append(TurnJudgement(i, match, answer, flagged, flagged or rules_reject))
    return out


def erroneous_turns(script: Script | None, trajectory: Trajectory | list[Turn], *,
                    dm_authoritative: bool = False) -> list[bool]:
    """Per turn, True on erroneous Player turns (:func:`judge_player_turns`); without a script, the DM decides."""
    turns = list(trajectory.turns if isinstance(trajectory, Trajectory) else trajectory)
    out = [False] * len(turns)
    if script is None:
        for i, turn in enumerate(turns):
            if turn.is_player and i + 1 < len(turns) and turns[i + 1].is_dm:
                out[i] = bool(turns[i + 1].flagged)
        return out
    for j in judge_player_turns(script, turns, dm_authoritative=dm_authoritative):
        out[j.index] = j.erroneous
    return out


# ---------------------------------------------------------------------------------------------- script


def _parse_script(raw: Script | Mapping[str, Any] | str) -> tuple[Script | None, list[Problem]]:
    import json

    if isinstance(raw, Script):
        return raw, []
    if isinstance(raw, (str, bytes)):
        try:
            raw = json.loads(raw)
        except json.JSONDecodeError as exc:
            return None, [Problem("bad_json", f"script is not valid JSON: {exc}", "script")]
    if not isinstance(raw, Mapping):
        return None, [Problem("bad_json", f"script must be a JSON object, got {type(raw).__name__}", "script")]
    try:
        return Script.model_validate(raw), []
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            loc = ".".join(str(x) for x in err["loc"]) or "script"
            kind = "missing_key" if err["type"] == "missing" else "bad_field"
            problems.append(Problem(kind, f"{loc}: {err['msg']}", "script"))
        return None, problems


@bounded_regex_time
def check_script(script: Script | Mapping[str, Any] | str) -> CheckReport:
    """Faults of the script itself (docs/method.md §3): any problem here means *regenerate the script*."""
    parsed, problems = _parse_script(script)
    report = CheckReport(problems=problems)
    if parsed is None:
        return report
    if not (parsed.goal or "").strip():
        report.problems.append(Problem("no_goal", "Goal is empty", "script"))
    if not [c for c in parsed.completion_conditions if str(c).strip()]:
        report.problems.append(Problem("no_completion_conditions", "Completion Conditions is empty", "script"))
    if not parsed.available_actions:
        report.problems.append(Problem("no_actions", "Available Actions is empty", "script"))
    for template, spec in parsed.available_actions.items():
        where = f"action {template!r}"
        try:
            compiled = compile_verification(spec.verification_code)
        except RegexRefused as exc:
            report.problems.append(Problem(exc.kind, f"{where}: {exc}", "script"))
            continue
        slots = template_slots(template)
        if len(set(slots)) != len(slots):
            report.problems.append(Problem("slot_mismatch", f"{where}: a slot name repeats", "script"))
        if compiled.groups != len(slots):
            report.problems.append(Problem(
                "slot_mismatch",
                f"{where}: verification code has {compiled.groups} capture group(s) but the template has "
                f"{len(slots)} slot(s) {slots}",
                "script",
            ))
        missing = [s for s in slots if s not in spec.parameters]
        extra = [p for p in spec.parameters if p not in slots]
        if missing or extra:
            report.problems.append(Problem(
                "slot_mismatch",
                f"{where}: parameters {sorted(spec.parameters)} do not match the slots {slots}"
                + (f" (missing {missing})" if missing else "") + (f" (unknown {extra})" if extra else ""),
                "script",
            ))
        for slot, values in spec.parameters.items():
            if not values or not [v for v in values if str(v).strip()]:
                report.problems.append(Problem("empty_parameters", f"{where}: no allowed values for {{{slot}}}", "script"))
        # A template filled with its own first values should pass its own regex; if not, the script is
        # inconsistent, but docs/method.md §3 does not make it a fault, so it is a warning.
        if slots and not report.problems and all(spec.parameters.get(s) for s in slots):
            example = template.format(**{s: spec.parameters[s][0] for s in slots})
            try:
                if _fullmatch(compiled, example) is None:
                    report.warnings.append(f"{where}: its own example {example!r} does not match its verification code")
            except RegexRefused as exc:
                report.problems.append(Problem(exc.kind, f"{where}: {exc}", "script"))
    return report


# ---------------------------------------------------------------------------------------------- trajectory

_PLAYER_KEYS = ("Thought", "Action")
_DM_KEYS = ("Observation", *ERROR_FLAGS)


def _parse_turns(trajectory: Trajectory | list | str) -> tuple[list[Turn], list[Problem], int | None]:
    """Parse turn by turn so a bad turn ends the verified prefix instead of rejecting the whole list.

    Returns (turns parsed before the first bad one, problems, index of the first bad turn or None).
    """
    import json

    if isinstance(trajectory, Trajectory):
        return list(trajectory.turns), [], None
    if isinstance(trajectory, (str, bytes)):
        try:
            trajectory = json.loads(trajectory)
        except json.JSONDecodeError as exc:
            return [], [Problem("bad_json", f"trajectory is not valid JSON: {exc}", "trajectory")], 0
    if isinstance(trajectory, Mapping):
        trajectory = trajectory.get("turns", trajectory.get("trajectory"))
    if not isinstance(trajectory, list):
        return [], [Problem("bad_json", "trajectory must be a JSON list of turns", "trajectory")], 0
    turns: list[Turn] = []
    for i, raw in enumerate(trajectory):
        if isinstance(raw, Turn):
            turns.append(raw)
            continue
        if not isinstance(raw, Mapping):
            return turns, [Problem("turn_keys", f"turn is a {type(raw).__name__}, not an object", "trajectory", i)], i
        try:
            turn = Turn.model_validate(raw)
        except ValidationError as exc:
            msg = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'turn'}: {e['msg']}" for e in exc.errors())
            return turns, [Problem("turn_keys", msg, "trajectory", i)], i
        turns.append(turn)
    return turns, [], None


def _given_keys(turn: Turn) -> set[str]:
    """Paper keys present on the turn (given in the raw JSON, or set when built in Python)."""
    # model_fields_set also lists extra keys (e.g. a recorded turn's "format_error"): those are their own names.
    keys = {(Turn.model_fields[name].alias or name) if name in Turn.model_fields else name
            for name in turn.model_fields_set}
    return keys | set(turn.model_extra or {})


def _missing_keys(turn: Turn) -> list[str]:
    given = _given_keys(turn)
    need = _PLAYER_KEYS if turn.is_player else _DM_KEYS
    missing = [k for k in need if k not in given]
    if turn.is_player and not (turn.action or "").strip() and "Action" not in missing:
        missing.append("Action (empty)")
    if turn.is_dm and turn.observation is not None and not turn.observation.strip() and "Observation" not in missing:
        missing.append("Observation (empty)")
    return missing


@bounded_regex_time  # a time bound on the regexes only; the rules are check_trajectory's own
def check_trajectory(
    script: Script | Mapping[str, Any] | str,
    trajectory: Trajectory | list | str,
    *,
    min_pairs: int = 2,
    require_completion: bool = True,
    dm_authoritative: bool = False,
) -> CheckReport:
    """Verify a trajectory against its script (docs/method.md §2-§3).

    ``dm_authoritative``: the DM was a real executor (recorded refine-agent episodes: an engine or the tools),
    so its flags decide which turns are erroneous and a disagreement with the rules is a warning, not a fault.

    Turn-level faults end the verified prefix at the first faulty turn. Whole-trajectory faults (too few
    pairs, no completion) leave the prefix so a continuation can fix them: for too few pairs after a
    completion the final Player/DM exchange is dropped, so the continuation must add refinements first.
    """
    script_report = check_script(script)
    parsed_script, _ = _parse_script(script)
    turns, problems, bad_at = _parse_turns(trajectory)
    report = CheckReport(problems=list(script_report.problems), warnings=list(script_report.warnings))
    report.problems.extend(problems)
    report.turns = len(turns) if bad_at is None else bad_at + 1
    first_fault: int | None = bad_at

    def fault(kind: str, message: str, index: int | None, blame: Blame = "trajectory") -> None:
        nonlocal first_fault
        report.problems.append(Problem(kind, message, blame, index))
        if index is not None and blame == "trajectory":
            first_fault = index if first_fault is None else min(first_fault, index)

    if not turns and bad_at is None:
        fault("empty", "trajectory has no turns", 0)

    # Per-turn keys and alternation.
    for i, turn in enumerate(turns):
        missing = _missing_keys(turn)
        if missing:
            fault("turn_keys", f"{turn.role} turn lacks {', '.join(missing)}", i)
            break
        if i and turn.role == turns[i - 1].role:
            fault("roles_alternate", f"two {turn.role} turns in a row", i)
            break
    usable = turns if first_fault is None else turns[:first_fault]

    # Erroneous Player turns: the one decision (erroneous_turns' judge_player_turns, docs/method.md §2).
    erroneous = [False] * len(turns)
    if parsed_script is not None:
        for j in judge_player_turns(parsed_script, usable, dm_authoritative=dm_authoritative):
            i, turn, match, answer, flagged = j.index, usable[j.index], j.match, j.answer, j.flagged
            erroneous[i] = j.erroneous
            if match.kind == "regex_error":
                fault("regex_error", match.message or "regex error", i, blame="script")
                continue
            if answer is None:
                continue
            if dm_authoritative:
                # A template without slots (a tool's) cannot judge arguments: the tool's rejection is no disagreement.
                if (not match.ok and not flagged) or (match.ok and match.values and answer.parameter_error):
                    report.warnings.append(f"turn {i}: the executor and the rules disagree on {turn.action!r}")
                continue
            if not match.ok and not flagged:
                fault("unflagged_invalid_action",
                      f"action {turn.action!r} is invalid ({match.message}) but the DM did not flag it", i)
            elif match.ok and answer.parameter_error:
                fault("false_parameter_error",
                      f"the DM flags parameter_error on {turn.action!r}, which matches {match.template!r}", i + 1)
    report.erroneous = erroneous

    # Error->refine pairs: an erroneous Player turn whose next Player turn is not erroneous.
    player_idx = [i for i, t in enumerate(usable) if t.is_player]
    report.pairs = sum(
        1 for a, b in zip(player_idx, player_idx[1:]) if erroneous[a] and not erroneous[b]
    )

    completed = False
    if first_fault is None and turns:
        last = turns[-1]
        uses_flag = any(t.task_completed is not None for t in turns if t.is_dm)
        completed = last.is_dm and not last.flagged and len(turns) >= 2 and turns[-2].is_player
        if completed and uses_flag:
            completed = bool(last.task_completed)
            early = [i for i, t in enumerate(turns[:-1]) if t.is_dm and t.task_completed]
            if early:
                fault("completed_early", "task_completed is true before the last turn", early[0])
        if require_completion and not completed and first_fault is None:
            fault("not_completed", "the last turn is not an unflagged DM turn that completes the task", None)
    if first_fault is None and report.pairs < min_pairs:
        fault("too_few_pairs", f"{report.pairs} error->refine pair(s), need at least {min_pairs}", None)

    if first_fault is not None:
        report.verified_prefix = first_fault
    elif completed and report.pairs < min_pairs:
        report.verified_prefix = max(0, len(turns) - 2)
    else:
        report.verified_prefix = len(turns)
    return report


__all__ = [
    "ActionMatch",
    "CheckReport",
    "Problem",
    "RegexRefused",
    "TurnJudgement",
    "erroneous_turns",
    "judge_player_turns",
    "check_script",
    "check_trajectory",
    "compile_verification",
    "match_action",
    "normalize_action",
]
