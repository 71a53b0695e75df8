"""The AgentRefine synthesis pipeline as LangGraph graphs: persona -> script -> trajectory -> verify.

Three factories, each returning an **uncompiled** ``StateGraph`` over one namespaced state (``synth_*`` keys),
so each can be compiled alone or added as a subgraph of a user's app:

- :func:`create_script_graph`: ``write_script`` -> ``check_script`` -> accept | retry (problems fed back) | give up.
- :func:`create_trajectory_graph`: one-shot (the paper: a :class:`~agentrefine_lg.synthesis.roles.TrajectoryWriter`
  writes the whole trajectory) or interactive (``player`` and ``dm`` nodes alternate; a flagged error routes
  back to the player with the DM's feedback - a refinement). Both end in ``verify``
  (:func:`agentrefine_lg.checks.check_trajectory`): accept | continue from the verified prefix | restart
  from empty after repeated faults | give the script up (blame 'script', or too many failed trajectories).
- :func:`create_synthesis_graph`: the whole pipeline for one persona, ending in a
  :class:`~agentrefine_lg.schema.RefinementSample` (``synth_sample``).

docs/method.md §3: every limit is a :class:`SynthesisSettings` field, every retry is counted in state.
Every rejected attempt is kept as a refinement trace (``synth_traces``) and emitted on
``stream_mode="custom"``. Transient LLM errors (429 / 5xx / timeouts) are retried by the node's
``RetryPolicy``. Only the *persona's* faults become counted failed attempts: a script or trajectory that fails
the checks, or a model answer that stays malformed (:class:`~agentrefine_lg.synthesis.llm_roles.MalformedOutputError`).
Everything else — retries exhausted on an outage, a 401, a programming error, a blocking call under
``langgraph dev`` — raises from the node (:mod:`agentrefine_lg.failures`), so a checkpointed thread stops at
that node and resumes with ``graph.ainvoke(None, config)`` once the cause is fixed.

The graphs are async (the teacher roles are): run them with ``ainvoke`` / ``astream``; a sync ``invoke``
raises one error saying so. Each run starts with ``begin``, which resets the per-persona counters, so a new
persona on a reused thread starts afresh. Input and output schemas are declared (:class:`SynthesisInput`,
:class:`TrajectoryInput`, :class:`SynthesisOutput`): Studio's form shows the persona or the script, not the
working keys.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from langchain_core.runnables import RunnableLambda
from langgraph.config import get_stream_writer
from langgraph.graph import END, START, StateGraph
from langgraph.runtime import Runtime
from langgraph.types import Command, RetryPolicy
from typing_extensions import TypedDict

from agentrefine_lg.checks import CheckReport, Problem, check_script, check_trajectory
from agentrefine_lg.convert import sample_from_trajectory
from agentrefine_lg.errors import InputError
from agentrefine_lg.failures import is_transient_error
from agentrefine_lg.named_graph import NamedStateGraph, check_state_schema, with_user_keys
from agentrefine_lg.schema import Script, TokenUsage, Trajectory, Turn, persona_id
from agentrefine_lg.synthesis.llm_roles import MalformedOutputError, extract_json
from agentrefine_lg.synthesis.roles import DM, Player, ScriptWriter, TrajectoryWriter

Mode = Literal["one_shot", "interactive"]


@dataclass(frozen=True)
class SynthesisSettings:
    """Every limit of the pipeline (docs/method.md §3). Defaults are this project's choices; the paper gives none."""

    max_script_attempts: int = 3
    """Scripts written per persona, whether ``check_script`` rejected them or their trajectories failed."""
    max_trajectory_attempts: int = 4
    """Trajectories tried per script (each continuation or restart is one) before the script is given up."""
    restart_after: int = 2
    """Consecutive failed attempts that did not extend the verified prefix before restarting from empty
    (Algorithm 1's ``error_num`` threshold)."""
    min_pairs: int = 2
    """Error->refine pairs a trajectory needs (the paper's quantity check)."""
    max_turns: int = 40
    """Interactive mode: the episode stops at the first DM turn at or past this many turns."""
    llm_max_attempts: int = 4
    """Tries per LLM call on transient errors (429, 5xx, timeouts), the first included."""
    retry_initial_interval: float = 1.0
    retry_backoff_factor: float = 2.0
    retry_max_interval: float = 60.0
    retry_jitter: bool = True
    llm_timeout: float | None = None
    """Seconds per LLM call attempt (a node timeout, retried as transient); None = the client's own."""
    keep_rejected_outputs: bool = False
    """Also keep each rejected script/trajectory in its trace (large; for debugging or negative data)."""

    def __post_init__(self) -> None:
        for name in ("max_script_attempts", "max_trajectory_attempts", "restart_after", "llm_max_attempts", "max_turns"):
            if getattr(self, name) < 1:
                raise ValueError(f"SynthesisSettings.{name} must be >= 1, got {getattr(self, name)}")
        if self.min_pairs < 0:
            raise ValueError(f"SynthesisSettings.min_pairs must be >= 0, got {self.min_pairs}")
        if self.retry_initial_interval < 0 or self.retry_max_interval < 0:
            raise ValueError("SynthesisSettings retry intervals must be >= 0")

    @classmethod
    def build(cls, settings: SynthesisSettings | None = None, **overrides: Any) -> SynthesisSettings:
        """``settings`` with ``overrides`` applied; an unknown name is an error that lists the known ones."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise TypeError(f"unknown synthesis setting(s) {unknown}; known: {sorted(known)}")
        return dataclasses.replace(settings or cls(), **overrides)

    def retry_policy(self, retry_on: Callable[[Exception], bool] = is_transient_error) -> RetryPolicy:
        # Explicit retry_on: LangGraph's default does not retry ValueError-derived client errors and
        # would retry everything else, including bugs.
        return RetryPolicy(
            initial_interval=self.retry_initial_interval, backoff_factor=self.retry_backoff_factor,
            max_interval=self.retry_max_interval, max_attempts=self.llm_max_attempts, jitter=self.retry_jitter,
            retry_on=retry_on,
        )


RESET_TRACES = {"reset": True}
"""A ``synth_traces`` update starting with this marker replaces the list (``begin`` starts a persona afresh)."""


def add_traces(left: list[dict[str, Any]] | None, right: list[dict[str, Any]] | None) -> list[dict[str, Any]]:
    """``synth_traces`` reducer: append, or replace when the update starts with :data:`RESET_TRACES`."""
    right = list(right or [])
    if right and right[0] == RESET_TRACES:
        return right[1:]
    return [*(left or []), *right]


class SynthesisInput(TypedDict, total=False):
    """Input of the script and synthesis graphs: the persona that seeds the script."""

    synth_persona: str


class TrajectoryInput(TypedDict, total=False):
    """Input of the trajectory graph: a script in the paper's format."""

    synth_script: dict[str, Any] | None


class SynthesisOutput(TypedDict, total=False):
    """What a run returns: the outcome, the sample, the script and trajectory, every rejected attempt and
    the counters (:func:`attempts_of`)."""

    synth_persona: str
    synth_persona_id: str
    synth_script: dict[str, Any] | None  # the current script, paper format
    synth_script_status: str | None  # 'accepted' | 'rejected'
    synth_trajectory: list[dict[str, Any]]  # current turns, paper format
    synth_trajectory_status: str | None  # 'accepted' | 'script_rejected' | 'rejected'
    synth_report: dict[str, Any] | None  # the last check report
    synth_script_attempts: int
    synth_trajectory_attempts: int  # all trajectory attempts of this persona
    synth_continuations: int
    synth_restarts: int
    synth_refinements: int  # interactive: flagged DM turns answered by the player
    synth_llm_failures: int  # model answers that stayed malformed (the persona's fault, counted)
    synth_transient_retries: int  # retried LLM calls (429 / 5xx / timeouts)
    synth_usage: dict[str, dict[str, int]]  # per teacher name: TokenUsage fields
    synth_traces: Annotated[list[dict[str, Any]], add_traces]  # every rejected attempt
    synth_status: str | None  # 'accepted' | 'rejected'
    synth_reason: str | None
    synth_sample: dict[str, Any] | None  # RefinementSample.to_dict()


class SynthesisState(SynthesisInput, TrajectoryInput, SynthesisOutput, total=False):
    """State of the synthesis graphs. Every key is namespaced ``synth_`` so the graphs nest in a user's app;
    the working keys below stay inside the graph."""

    synth_script_problems: list[str]  # fed to the next write_script
    synth_prefix: int  # turns the current attempt started from
    synth_trajectory_problems: list[str]  # fed to the next attempt
    synth_script_trajectory_attempts: int  # attempts on the current script
    synth_consecutive_faults: int
    synth_decision: str | None  # routing label of the last check


# ---------------------------------------------------------------------------------------------- helpers


_COUNTERS = ("synth_script_attempts", "synth_trajectory_attempts", "synth_continuations", "synth_restarts",
             "synth_refinements", "synth_llm_failures", "synth_transient_retries")


def _missing_counters(state: SynthesisState) -> dict[str, int]:
    """Zeros for counters not in the state yet, so every run's output has all of them."""
    return {key: 0 for key in _COUNTERS if key not in state}


_RESET: dict[str, Any] = {
    "synth_persona_id": None, "synth_script": None, "synth_script_status": None, "synth_trajectory": [],
    "synth_trajectory_status": None, "synth_report": None, "synth_status": None, "synth_reason": None,
    "synth_sample": None, "synth_prefix": 0, "synth_script_trajectory_attempts": 0, "synth_consecutive_faults": 0,
    "synth_decision": None, "synth_script_problems": [], "synth_trajectory_problems": [], "synth_usage": {},
}


def _fresh(keep: str) -> dict[str, Any]:
    """A new run's reset: every per-persona key cleared (the run's input ``keep`` excepted), counters zeroed."""
    update = {key: value for key, value in _RESET.items() if key != keep}
    update.update({key: 0 for key in _COUNTERS}, synth_traces=[RESET_TRACES])
    return update


def _sync_unsupported(state: Any) -> Any:
    raise TypeError(
        "the synthesis graphs are async (the teacher roles are): run them with `await graph.ainvoke(...)` or "
        "`graph.astream(...)`; sync `invoke`/`stream` are not supported")


def _emit(event: dict[str, Any]) -> None:
    try:
        get_stream_writer()(event)
    except Exception:  # outside a runnable context (a node called directly in a unit test)
        pass


def _add_usage(state: SynthesisState, name: str, usage: TokenUsage | None) -> dict[str, dict[str, int]]:
    table = {k: dict(v) for k, v in (state.get("synth_usage") or {}).items()}
    table[name] = TokenUsage.model_validate(table.get(name, {})).add(usage or TokenUsage()).model_dump()
    return table


def total_usage(state: SynthesisState) -> TokenUsage:
    """All teachers' usage of a run of the graph summed."""
    total = TokenUsage()
    for value in (state.get("synth_usage") or {}).values():
        total = total.add(value)
    return total


def _retries(runtime: Runtime | None, node: str) -> int:
    """Transient retries this node's call took (its attempt number - 1), announced on the custom stream."""
    try:
        retries = max(0, int(runtime.execution_info.node_attempt) - 1) if runtime is not None else 0
    except (AttributeError, TypeError, ValueError):
        retries = 0
    if retries:
        _emit({"type": "retry", "node": node, "retries": retries})
    return retries


def _script_of(state: SynthesisState) -> Script:
    raw = state.get("synth_script")
    if raw is None:
        raise InputError("the trajectory graph needs 'synth_script' (a script in the paper's format)", field="synth_script")
    return raw if isinstance(raw, Script) else Script.model_validate(raw)


def _turns_of(state: SynthesisState) -> list[Turn]:
    return [t if isinstance(t, Turn) else Turn.model_validate(t) for t in state.get("synth_trajectory") or []]


def _dump_turns(turns: Sequence[Turn]) -> list[dict[str, Any]]:
    out = []
    for i, turn in enumerate(turns):
        data = turn.to_paper()
        data["turn"] = i + 1
        out.append(data)
    return out


def _same_turn(a: Any, b: Turn) -> bool:
    try:
        a = a if isinstance(a, Turn) else Turn.model_validate(a)
    except Exception:
        return False
    def norm(text: str | None) -> str:
        return " ".join((text or "").split())

    return a.role == b.role and norm(a.action) == norm(b.action) and norm(a.observation) == norm(b.observation)


def _problem_lines(report: CheckReport) -> list[str]:
    return [str(p) for p in report.problems]


def _failure_message(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {str(exc)[:300]}"


# ---------------------------------------------------------------------------------------------- nodes
# CPU-only nodes are ``async def`` too: LangGraph would run sync nodes of an async run in a thread pool,
# and that hop costs more than the node itself (benchmarks/synthesis.py).


class _Nodes:
    """The node functions over :class:`SynthesisState`, bound to roles and settings."""

    def __init__(
        self,
        settings: SynthesisSettings,
        *,
        script_writer: ScriptWriter | None = None,
        trajectory_writer: TrajectoryWriter | None = None,
        player: Player | None = None,
        dm: DM | None = None,
        mode: Mode = "one_shot",
        in_pipeline: bool = False,
    ):
        self.s = settings
        self.script_writer, self.trajectory_writer, self.player, self.dm = script_writer, trajectory_writer, player, dm
        self.mode = mode
        # Inside the synthesis graph a given-up script goes back to write_script; alone, the graph ends.
        self.in_pipeline = in_pipeline

    # -- script stage --------------------------------------------------------------------------------

    async def begin(self, state: SynthesisState) -> dict[str, Any]:
        """A new run (persona or script): the input is checked and every per-persona counter starts at 0."""
        if self.script_writer is not None:
            if not (state.get("synth_persona") or "").strip():
                raise InputError("the synthesis graph needs a non-empty 'synth_persona'", field="synth_persona")
            return _fresh(keep="synth_persona")
        _script_of(state)  # fail early, clearly, on a missing/invalid script
        return _fresh(keep="synth_script")

    async def write_script(self, state: SynthesisState, runtime: Runtime) -> Command:
        persona = (state.get("synth_persona") or "").strip()
        if not persona:
            raise InputError("the script graph needs a non-empty 'synth_persona'", field="synth_persona")
        try:
            raw, usage = await self.script_writer.awrite_script(persona, list(state.get("synth_script_problems") or []))
        except MalformedOutputError as exc:  # the model's answer stayed unusable: a counted failed attempt
            return self._script_failure(state, exc)
        retries = _retries(runtime, "write_script")
        return Command(goto="check_script", update={
            **_missing_counters(state),
            "synth_persona": persona,
            "synth_persona_id": persona_id(persona),
            "synth_script": raw.to_paper() if isinstance(raw, Script) else raw,
            "synth_script_attempts": state.get("synth_script_attempts", 0) + 1,
            "synth_transient_retries": state.get("synth_transient_retries", 0) + retries,
            "synth_usage": _add_usage(state, self.script_writer.name, usage),
        })

    async def check_script(self, state: SynthesisState) -> dict[str, Any]:
        raw = state.get("synth_script")
        if isinstance(raw, str):
            try:
                raw = extract_json(raw)
            except ValueError as exc:
                raw = None
                report = CheckReport(problems=[Problem("bad_json", f"script is not valid JSON: {exc}", "script")])
        if raw is not None:
            report = check_script(raw)
        if report.ok:
            script = raw if isinstance(raw, Script) else Script.model_validate(raw)
            script.persona = state.get("synth_persona") or script.persona  # provenance; also makes ids unique
            return {"synth_script": script.to_paper(), "synth_script_status": "accepted", "synth_script_problems": [],
                    "synth_decision": "accept", "synth_report": report.to_dict()}
        attempts = state.get("synth_script_attempts", 0)
        decision = "retry" if attempts < self.s.max_script_attempts else "give_up"
        return self._reject_script(state, _problem_lines(report), decision, blame="script",
                                   rejected=state.get("synth_script"), report=report)

    def _reject_script(self, state: SynthesisState, problems: list[str], decision: str, *, blame: str,
                       rejected: Any = None, report: CheckReport | None = None) -> dict[str, Any]:
        attempts = state.get("synth_script_attempts", 0)
        trace = {"stage": "script", "attempt": attempts, "script_attempt": attempts, "problems": problems,
                 "blame": blame, "decision": decision}
        if self.s.keep_rejected_outputs:
            trace["output"] = rejected
        _emit({"type": "rejected", **trace})
        update: dict[str, Any] = {
            "synth_script_problems": problems, "synth_decision": decision, "synth_traces": [trace],
            "synth_report": report.to_dict() if report else None,
        }
        if decision == "give_up":
            reason = f"no valid script after {attempts} attempt(s)"
            update.update(synth_script_status="rejected", synth_status="rejected", synth_reason=reason)
            _emit({"type": "given_up", "stage": "script", "reason": reason})
        return update

    def _script_failure(self, state: SynthesisState, exc: MalformedOutputError) -> Command:
        """The script writer's answer stayed malformed: a counted script attempt (the persona's fault)."""
        attempts = state.get("synth_script_attempts", 0) + 1
        state = {**state, "synth_script_attempts": attempts}
        decision = "retry" if attempts < self.s.max_script_attempts else "give_up"
        update = self._reject_script(state, [f"[llm] the script writer failed: {_failure_message(exc)}"], decision, blame="llm")
        update.update(
            synth_script_attempts=attempts,
            synth_llm_failures=state.get("synth_llm_failures", 0) + 1,
            synth_usage=_add_usage(state, self.script_writer.name, getattr(exc, "usage", None)),
            # The prompt carries script-check problems only: a transport failure is not the model's fault.
            synth_script_problems=list(state.get("synth_script_problems") or []),
        )
        return Command(goto="write_script" if decision == "retry" else END, update=update)

    def route_script(self, state: SynthesisState) -> str:
        return state.get("synth_decision") or "give_up"

    # -- trajectory stage ----------------------------------------------------------------------------

    async def begin_trajectory(self, state: SynthesisState) -> dict[str, Any]:
        _script_of(state)  # fail early, clearly, on a missing/invalid script
        return {**_missing_counters(state), "synth_trajectory": [], "synth_prefix": 0, "synth_trajectory_problems": [],
                "synth_script_trajectory_attempts": 0, "synth_consecutive_faults": 0,
                "synth_trajectory_status": None, "synth_decision": None}

    def next_actor(self, state: SynthesisState) -> str:
        """Interactive: the DM opens and answers Player turns; the Player answers DM turns."""
        turns = state.get("synth_trajectory") or []
        if not turns:
            return "dm"
        last = turns[-1]
        role = last.role if isinstance(last, Turn) else str(last.get("role", "")).lower()
        return "dm" if str(role).lower() == "player" else "player"

    async def write_trajectory(self, state: SynthesisState, runtime: Runtime) -> Command:
        script = _script_of(state)
        prefix = _turns_of(state)
        try:
            raw, usage = await self.trajectory_writer.awrite_trajectory(
                script, prefix, list(state.get("synth_trajectory_problems") or []))
        except MalformedOutputError as exc:
            return self._trajectory_failure(state, "write_trajectory", exc)
        retries = _retries(runtime, "write_trajectory")
        update: dict[str, Any] = {
            "synth_transient_retries": state.get("synth_transient_retries", 0) + retries,
            "synth_usage": _add_usage(state, self.trajectory_writer.name, usage),
        }
        if isinstance(raw, str):
            try:
                raw = extract_json(raw)
            except ValueError as exc:
                update["synth_trajectory"] = _dump_turns(prefix)
                update["synth_trajectory_problems"] = [f"[trajectory/bad_json] the reply is not a JSON list of turns: {exc}"]
                update["synth_decision"] = "unparsed"
                return Command(goto="verify", update=update)
        if isinstance(raw, dict):
            raw = raw.get("turns", raw.get("trajectory", raw.get("Trajectory", raw)))
        if not isinstance(raw, list):
            update["synth_trajectory"] = _dump_turns(prefix)
            update["synth_trajectory_problems"] = [f"[trajectory/bad_json] expected a JSON list of turns, got {type(raw).__name__}"]
            update["synth_decision"] = "unparsed"
            return Command(goto="verify", update=update)
        # The writer may return the whole trajectory (prefix repeated) or only the continuation.
        whole = not prefix or (raw and _same_turn(raw[0], prefix[0]))
        turns = raw if whole else [*(t.to_paper() for t in prefix), *raw]
        update["synth_trajectory"] = [t.to_paper() if isinstance(t, Turn) else t for t in turns]
        update["synth_decision"] = None
        return Command(goto="verify", update=update)

    async def _take_turn(self, state: SynthesisState, runtime: Runtime, role: str
                         ) -> tuple[list[Turn], Turn, dict[str, Any]] | Command:
        """One role's turn (the Player acts, the DM responds): the turns so far, the new turn and the
        bookkeeping both nodes update; or the failure Command when the role's answer stayed malformed."""
        turns = _turns_of(state)
        actor = self.player if role == "player" else self.dm
        call = self.player.aact if role == "player" else self.dm.arespond
        try:
            turn, usage = await call(_script_of(state), turns)
        except MalformedOutputError as exc:
            return self._trajectory_failure(state, role, exc)
        turn = turn if isinstance(turn, Turn) else Turn.model_validate(turn)
        update = {"synth_transient_retries": state.get("synth_transient_retries", 0) + _retries(runtime, role),
                  "synth_usage": _add_usage(state, actor.name, usage)}
        return turns, turn, update

    async def player_node(self, state: SynthesisState, runtime: Runtime) -> Command:
        taken = await self._take_turn(state, runtime, "player")
        if isinstance(taken, Command):
            return taken
        turns, turn, update = taken
        refined = bool(turns and turns[-1].is_dm and turns[-1].flagged)
        return Command(goto="dm", update={**update, "synth_trajectory": _dump_turns([*turns, turn]),
                                          "synth_refinements": state.get("synth_refinements", 0) + int(refined)})

    async def dm_node(self, state: SynthesisState, runtime: Runtime) -> Command:
        taken = await self._take_turn(state, runtime, "dm")
        if isinstance(taken, Command):
            return taken
        turns, turn, update = taken
        turns.append(turn)
        if len(turns) >= self.s.max_turns or turn.task_completed:
            decision = "verify"
        else:
            decision = "refine" if turn.flagged else "act"
        return Command(goto="verify" if decision == "verify" else "player",
                       update={**update, "synth_trajectory": _dump_turns(turns), "synth_decision": decision})

    async def verify(self, state: SynthesisState) -> dict[str, Any]:
        script = _script_of(state)
        attempts = state.get("synth_trajectory_attempts", 0) + 1
        per_script = state.get("synth_script_trajectory_attempts", 0) + 1
        base = {"synth_trajectory_attempts": attempts, "synth_script_trajectory_attempts": per_script}
        if state.get("synth_decision") == "unparsed":
            problems = list(state.get("synth_trajectory_problems") or [])
            return {**base, **self._decide({**state, **base}, problems, "trajectory", state.get("synth_prefix", 0), None)}
        turns = state.get("synth_trajectory") or []
        report = check_trajectory(script, turns, min_pairs=self.s.min_pairs)
        if report.ok:
            _emit({"type": "accepted_trajectory", "turns": report.turns, "pairs": report.pairs})
            return {**base, "synth_decision": "accept", "synth_trajectory_status": "accepted",
                    "synth_trajectory_problems": [], "synth_report": report.to_dict(),
                    "synth_trajectory": _dump_turns(_turns_of(state))}
        return {**base, **self._decide({**state, **base}, _problem_lines(report), report.blame or "trajectory",
                                       report.verified_prefix, report)}

    def _decide(self, state: SynthesisState, problems: list[str], blame: str, verified_prefix: int,
                report: CheckReport | None) -> dict[str, Any]:
        """After a failed trajectory attempt: continue | restart | new_script | give_up (docs/method.md §3)."""
        start = state.get("synth_prefix", 0)
        per_script = state.get("synth_script_trajectory_attempts", 0)
        faults = state.get("synth_consecutive_faults", 0)
        faults = faults + 1 if verified_prefix <= start else 1
        update: dict[str, Any] = {"synth_report": report.to_dict() if report else None}
        if blame == "script":
            decision, why = "new_script", "the trajectory check blames the script"
        elif per_script >= self.s.max_trajectory_attempts:
            decision, why = "new_script", f"{per_script} failed trajector{'y' if per_script == 1 else 'ies'} on this script"
        elif faults >= self.s.restart_after:
            decision, why = "restart", f"{faults} consecutive faults without progress"
        else:
            decision, why = "continue", f"continue from the verified prefix ({verified_prefix} turns)"
        turns = _turns_of(state)
        if decision == "continue":
            keep = turns[:verified_prefix]
            update.update(synth_trajectory=_dump_turns(keep), synth_prefix=len(keep), synth_consecutive_faults=faults,
                          synth_continuations=state.get("synth_continuations", 0) + 1)
        elif decision == "restart":
            update.update(synth_trajectory=[], synth_prefix=0, synth_consecutive_faults=0,
                          synth_restarts=state.get("synth_restarts", 0) + 1)
        if decision == "new_script":
            script_attempts = state.get("synth_script_attempts", 0)
            if self.in_pipeline and script_attempts >= self.s.max_script_attempts:
                decision = "give_up"
                why += f"; no script attempts left ({script_attempts}/{self.s.max_script_attempts})"
        trace = {"stage": "trajectory", "attempt": state.get("synth_trajectory_attempts", 0),
                 "script_attempt": state.get("synth_script_attempts", 0), "script_trajectory_attempt": per_script,
                 "problems": problems, "blame": blame, "decision": decision, "why": why,
                 "verified_prefix": verified_prefix, "start_prefix": start, "turns": len(turns)}
        if self.s.keep_rejected_outputs:
            trace["output"] = _dump_turns(turns)
        _emit({"type": "rejected", **trace})
        update.update(synth_decision=decision, synth_trajectory_problems=problems, synth_traces=[trace])
        if decision == "new_script":
            update["synth_trajectory_status"] = "script_rejected"
            # The script writer learns why its script was given up.
            update["synth_script_problems"] = [f"trajectories for the previous script failed: {p}" for p in problems[:5]]
            update["synth_script_status"] = "rejected"
            if not self.in_pipeline:
                update.update(synth_status="rejected", synth_reason=why)
        elif decision == "give_up":
            update.update(synth_trajectory_status="rejected", synth_status="rejected", synth_reason=why)
            _emit({"type": "given_up", "stage": "trajectory", "reason": why})
        return update

    def route_verify(self, state: SynthesisState) -> str:
        return state.get("synth_decision") or "give_up"

    def _trajectory_failure(self, state: SynthesisState, node: str, exc: MalformedOutputError) -> Command:
        """write_trajectory / player / dm answered malformed for good: a counted failed trajectory attempt."""
        role = {"write_trajectory": self.trajectory_writer, "player": self.player, "dm": self.dm}.get(node)
        attempts = state.get("synth_trajectory_attempts", 0) + 1
        per_script = state.get("synth_script_trajectory_attempts", 0) + 1
        state = {**state, "synth_trajectory_attempts": attempts, "synth_script_trajectory_attempts": per_script}
        problem = f"[llm] {node} failed: {_failure_message(exc)}"
        # Interactive turns so far are kept up to their verified prefix; one-shot keeps its start prefix.
        prefix = state.get("synth_prefix", 0)
        if self.mode == "interactive":
            partial = check_trajectory(_script_of(state), state.get("synth_trajectory") or [], min_pairs=0,
                                       require_completion=False)
            prefix = partial.verified_prefix
        update = self._decide(state, [problem], "llm", prefix, None)
        update.update(
            synth_trajectory_attempts=attempts, synth_script_trajectory_attempts=per_script,
            synth_llm_failures=state.get("synth_llm_failures", 0) + 1,
        )
        if role is not None:
            update["synth_usage"] = _add_usage(state, role.name, getattr(exc, "usage", None))
        return Command(goto=self._target(update["synth_decision"]), update=update)

    def _target(self, decision: str) -> str:
        if decision in ("continue", "restart"):
            return "write_trajectory" if self.mode == "one_shot" else "next_turn"
        if decision == "new_script" and self.in_pipeline:
            return "write_script"
        return END

    # -- outcome -------------------------------------------------------------------------------------

    async def finalize(self, state: SynthesisState) -> dict[str, Any]:
        script = _script_of(state)
        trajectory = Trajectory.model_validate(state.get("synth_trajectory") or [])
        names = []
        for role in (self.script_writer, self.trajectory_writer, self.player, self.dm):
            if role is not None and role.name not in names:
                names.append(role.name)
        sample = sample_from_trajectory(
            script, trajectory,
            persona=state.get("synth_persona"),
            teacher="+".join(names),
            attempts=attempts_of(state),
            usage=total_usage(state),
            persona_id=state.get("synth_persona_id") or persona_id(state.get("synth_persona") or script.persona or ""),
            mode=self.mode,
            pairs=(state.get("synth_report") or {}).get("pairs"),
        )
        _emit({"type": "accepted", "persona_id": state.get("synth_persona_id"), "sample_id": sample.id,
               "pairs": (state.get("synth_report") or {}).get("pairs")})
        return {"synth_status": "accepted", "synth_reason": None, "synth_sample": sample.to_dict()}


def attempts_of(state: SynthesisState) -> dict[str, int]:
    """The counted retries of one persona's run (the sample's ``attempts``)."""
    return {
        "script": state.get("synth_script_attempts", 0),
        "trajectory": state.get("synth_trajectory_attempts", 0),
        "continuations": state.get("synth_continuations", 0),
        "restarts": state.get("synth_restarts", 0),
        "refinements": state.get("synth_refinements", 0),
        "llm_failures": state.get("synth_llm_failures", 0),
        "transient_retries": state.get("synth_transient_retries", 0),
    }


# ---------------------------------------------------------------------------------------------- wiring


def _add_begin(builder: StateGraph, nodes: _Nodes, first: str) -> None:
    # Sync invoke reaches `begin` first and gets one clear error; async runs reset the persona's counters.
    builder.add_node("begin", RunnableLambda(_sync_unsupported, afunc=nodes.begin, name="begin"))
    builder.add_edge(START, "begin")
    builder.add_edge("begin", first)


def _add_script_nodes(builder: StateGraph, nodes: _Nodes, *, accept: str) -> None:
    s = nodes.s
    builder.add_node("write_script", nodes.write_script, retry_policy=s.retry_policy(), timeout=s.llm_timeout,
                     destinations=("check_script", "write_script", END))
    builder.add_node("check_script", nodes.check_script)
    builder.add_conditional_edges("check_script", nodes.route_script,
                                  {"accept": accept, "retry": "write_script", "give_up": END})


def _add_trajectory_nodes(builder: StateGraph, nodes: _Nodes, *, accept: str, new_script: str) -> None:
    s = nodes.s
    policy = s.retry_policy()
    builder.add_node("begin_trajectory", nodes.begin_trajectory)
    builder.add_node("verify", nodes.verify)
    resume = "write_trajectory" if nodes.mode == "one_shot" else "next_turn"
    # Where a counted failure (a malformed answer) goes: continue / restart, a new script, or the end.
    failed = tuple(dict.fromkeys([resume, new_script, END]))
    if nodes.mode == "one_shot":
        builder.add_node("write_trajectory", nodes.write_trajectory, retry_policy=policy, timeout=s.llm_timeout,
                         destinations=tuple(dict.fromkeys(["verify", *failed])))
        builder.add_edge("begin_trajectory", "write_trajectory")
    else:
        builder.add_node("next_turn", _passthrough)  # routes a continuation to whoever acts next
        builder.add_node("player", nodes.player_node, retry_policy=policy, timeout=s.llm_timeout,
                         destinations=tuple(dict.fromkeys(["dm", *failed])))
        builder.add_node("dm", nodes.dm_node, retry_policy=policy, timeout=s.llm_timeout,
                         destinations=tuple(dict.fromkeys(["player", "verify", *failed])))
        builder.add_edge("begin_trajectory", "dm")  # the DM opens the scene
        builder.add_conditional_edges("next_turn", nodes.next_actor, {"player": "player", "dm": "dm"})
    builder.add_conditional_edges("verify", nodes.route_verify, {
        "accept": accept, "continue": resume, "restart": resume, "new_script": new_script, "give_up": END,
    })


def _builder(state_schema: type | None, context_schema: type | None, input_schema: type, name: str,
             factory: str) -> NamedStateGraph:
    if state_schema is not None:
        check_state_schema(state_schema, SynthesisState, factory)
    return NamedStateGraph(state_schema or SynthesisState, context_schema,
                           input_schema=with_user_keys(input_schema, state_schema, SynthesisState),
                           output_schema=with_user_keys(SynthesisOutput, state_schema, SynthesisState), name=name)


async def _passthrough(state: SynthesisState) -> dict[str, Any]:
    return {}


def _check_role(role: Any, method: str, what: str) -> None:
    if role is None or not callable(getattr(role, method, None)):
        raise TypeError(f"{what} must implement async {method}(...) (agentrefine_lg.synthesis.roles), got {type(role).__name__}")
    if not getattr(role, "name", None):
        raise TypeError(f"{what} needs a 'name' (the teacher recorded in each sample)")


def _trajectory_roles(roles: Any, mode: Mode) -> tuple[TrajectoryWriter | None, Player | None, DM | None]:
    if mode == "one_shot":
        _check_role(roles, "awrite_trajectory", "the one-shot trajectory writer")
        return roles, None, None
    if mode == "interactive":
        if not (isinstance(roles, (tuple, list)) and len(roles) == 2):
            raise TypeError("interactive mode needs (player, dm) roles")
        player, dm = roles
        _check_role(player, "aact", "the player")
        _check_role(dm, "arespond", "the DM")
        return None, player, dm
    raise ValueError(f"mode must be 'one_shot' or 'interactive', not {mode!r}")


def create_script_graph(writer: ScriptWriter, *, settings: SynthesisSettings | None = None,
                        state_schema: type | None = None, context_schema: type | None = None,
                        name: str = "synthesis_script", **overrides: Any) -> StateGraph:
    """persona -> ``write_script`` -> ``check_script`` -> accept | retry with the problems | give up.

    Input ``{"synth_persona": text}``; output ``synth_script`` (paper format) and ``synth_script_status``.
    ``overrides`` are :class:`SynthesisSettings` fields, e.g. ``max_script_attempts=5``.
    """
    s = SynthesisSettings.build(settings, **overrides)
    _check_role(writer, "awrite_script", "the script writer")
    nodes = _Nodes(s, script_writer=writer)
    builder = _builder(state_schema, context_schema, SynthesisInput, name, "create_script_graph")
    _add_begin(builder, nodes, "write_script")
    _add_script_nodes(builder, nodes, accept=END)
    return builder


def create_trajectory_graph(writer_or_roles: TrajectoryWriter | tuple[Player, DM], *, mode: Mode = "one_shot",
                            settings: SynthesisSettings | None = None, state_schema: type | None = None,
                            context_schema: type | None = None, name: str = "synthesis_trajectory",
                            **overrides: Any) -> StateGraph:
    """script -> trajectory -> ``verify`` -> accept | continue | restart | give the script up.

    ``mode="one_shot"`` (the paper): ``writer_or_roles`` is a TrajectoryWriter. ``mode="interactive"``:
    a ``(player, dm)`` pair; the nodes alternate and a flagged DM turn routes back to the player.
    Input ``{"synth_script": script}``; output ``synth_trajectory`` and ``synth_trajectory_status``
    ('accepted', 'script_rejected' when the script should be rewritten).
    """
    s = SynthesisSettings.build(settings, **overrides)
    writer, player, dm = _trajectory_roles(writer_or_roles, mode)
    nodes = _Nodes(s, trajectory_writer=writer, player=player, dm=dm, mode=mode)
    builder = _builder(state_schema, context_schema, TrajectoryInput, name, "create_trajectory_graph")
    _add_begin(builder, nodes, "begin_trajectory")
    _add_trajectory_nodes(builder, nodes, accept=END, new_script=END)
    return builder


def create_synthesis_graph(script_writer: ScriptWriter, trajectory_roles: TrajectoryWriter | tuple[Player, DM], *,
                           mode: Mode = "one_shot", settings: SynthesisSettings | None = None,
                           state_schema: type | None = None, context_schema: type | None = None,
                           name: str = "synthesis", **overrides: Any) -> StateGraph:
    """The whole pipeline for one persona, ending in ``synth_sample`` (a RefinementSample as a dict).

    ``trajectory_roles``: a TrajectoryWriter (``mode="one_shot"``) or ``(player, dm)`` (``"interactive"``).
    Output: ``synth_status`` ('accepted' | 'rejected'), ``synth_reason``, ``synth_sample``,
    ``synth_traces`` (every rejected attempt) and the counters (:func:`attempts_of`).
    """
    s = SynthesisSettings.build(settings, **overrides)
    _check_role(script_writer, "awrite_script", "the script writer")
    writer, player, dm = _trajectory_roles(trajectory_roles, mode)
    nodes = _Nodes(s, script_writer=script_writer, trajectory_writer=writer, player=player, dm=dm, mode=mode,
                   in_pipeline=True)
    builder = _builder(state_schema, context_schema, SynthesisInput, name, "create_synthesis_graph")
    _add_begin(builder, nodes, "write_script")
    _add_script_nodes(builder, nodes, accept="begin_trajectory")
    _add_trajectory_nodes(builder, nodes, accept="finalize", new_script="write_script")
    builder.add_node("finalize", nodes.finalize)
    builder.add_edge("finalize", END)
    return builder


def recursion_limit(settings: SynthesisSettings | None = None, mode: Mode = "one_shot") -> int:
    """A LangGraph ``recursion_limit`` that the settings' own limits can never hit first."""
    s = settings or SynthesisSettings()
    per_trajectory = (s.max_turns + 4) if mode == "interactive" else 3
    return 22 + s.max_script_attempts * (3 + s.max_trajectory_attempts * per_trajectory)


__all__ = [
    "SynthesisInput",
    "SynthesisOutput",
    "SynthesisSettings",
    "SynthesisState",
    "TrajectoryInput",
    "add_traces",
    "attempts_of",
    "create_script_graph",
    "create_synthesis_graph",
    "create_trajectory_graph",
    "recursion_limit",
    "total_usage",
]
