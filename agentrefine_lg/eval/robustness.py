"""The perturbation study (docs/method.md §A): same tasks, action forms reworded, does the agent still cope?

The paper perturbs Alfworld's candidate actions so they use other tokens or another token order with the same
meaning, and reports the success-rate drop and its spread across perturbations. Its exact rules (Appendix K)
are not available, so ours are explicit and named:

- ``synonym``: other verbs (``go to X`` -> ``move to X``, ``take X from Y`` -> ``grab X from Y``,
  ``pick up X`` -> ``grab X``, ``turn left`` -> ``rotate left``, ...);
- ``reorder``: the arguments of two-argument actions swap places (``take X from Y`` -> ``from Y take X``);
- ``article``: a determiner before every argument (``go to X`` -> ``go to the X``);
- ``combined``: ``synonym`` then ``reorder``.

:class:`PerturbedEnv` wraps any :class:`~agentrefine_lg.env.TextEnv`: ``script()`` shows the reworded templates
(with their own verification regexes), ``step`` maps a reworded action back to the engine's canonical command,
``oracle_action``/``valid_actions`` speak the reworded forms. The canonical form of a reworded action is *not*
accepted (``parameter_error``) unless ``accept_original=True``: a model that ignores the listed forms and types
what it memorised should fail, which is what the study measures. Actions outside the script's templates
(engine aliases, ``check valid actions``) pass through unchanged.

:func:`robustness_report` compares evaluation rows of the unperturbed run with those of each scheme: success
and progress per scheme, their drops in percentage points, and the mean and standard deviation across schemes.
"""

from __future__ import annotations

import re
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from agentrefine_lg.env import StepResult, TextEnv
from agentrefine_lg.errors import InputError
from agentrefine_lg.eval.base import load_task, normalize_action, template_regex
from agentrefine_lg.schema import ActionSpec, Script

Rule = tuple[str, str]
"""``(pattern, replacement)`` over action templates: ``("take {a} from {b}", "from {b} take {a}")``."""

#: exact template rewrites, tried first (first match wins); ``{a}``/``{b}`` match any slot text
_SYNONYM_RULES: tuple[Rule, ...] = (
    # household (alfworld 0.4.2 and AgentBoard forms)
    ("go to {a}", "move to {a}"),
    ("take {a} from {b}", "grab {a} from {b}"),
    ("move {a} to {b}", "place {a} in/on {b}"),
    ("put {a} in/on {b}", "place {a} in/on {b}"),
    ("heat {a} with {b}", "warm {a} using {b}"),
    ("cool {a} with {b}", "chill {a} using {b}"),
    ("clean {a} with {b}", "wash {a} using {b}"),
    ("use {a}", "switch {a}"),
    ("examine {a}", "inspect {a}"),
    ("open {a}", "pull open {a}"),
    ("close {a}", "shut {a}"),
    ("look", "look around"),
    ("inventory", "check inventory"),
    # babyai
    ("turn left", "rotate left"),
    ("turn right", "rotate right"),
    ("move forward", "step forward"),
    ("pick up", "grab"),
    ("drop", "put down"),
    ("toggle", "open or close"),
    # sciworld
    ("pick up {a}", "grab {a}"),
    ("put down {a}", "set down {a}"),
    ("look around", "survey the room"),
    ("look at {a}", "inspect {a}"),
    ("look in {a}", "peek into {a}"),
    ("pour {a} into {b}", "empty {a} into {b}"),
    ("activate {a}", "turn on {a}"),
    ("deactivate {a}", "turn off {a}"),
    ("teleport to {a}", "warp to {a}"),
    ("focus on {a}", "concentrate on {a}"),
)
#: generic verb synonyms for templates no exact rule covers (PDDL, TextWorld-Express, user environments)
_VERB_SYNONYMS: dict[str, str] = {
    "go": "walk", "move": "shift", "take": "grab", "get": "obtain", "put": "place", "place": "set",
    "pick": "lift", "drop": "release", "open": "unclose", "close": "shut", "examine": "inspect",
    "look": "view", "stack": "pile", "unstack": "unpile", "pickup": "lift", "putdown": "set",
    "read": "peruse", "eat": "consume", "cook": "prepare", "slice": "cut", "chop": "hack", "use": "employ",
    "connect": "attach", "disconnect": "detach", "mix": "blend", "wait": "pause", "inventory": "belongings",
}

SCHEMES: tuple[str, ...] = ("synonym", "reorder", "article", "combined")

#: other canonical spellings an engine accepts for a template (alfworld takes AgentBoard's ``put X in/on Y`` for
#: ``move X to Y``): once the template is reworded, these memorised forms are rejected too
_ORIGINAL_ALIASES: dict[str, tuple[str, ...]] = {
    "move {a} to {b}": ("put {a} in {b}", "put {a} on {b}", "put {a} in/on {b}", "put {a} into {b}"),
    "pick up {a}": ("take {a}",),
    "look": ("look around",),
}

_SLOT_TEXT = re.compile(r"\{\w+\}")
_VALID_PREFIX = "Valid actions:"
_MORE = re.compile(r"\s*\(and \d+ more\)\.?$")


def _rule_regex(pattern: str) -> re.Pattern[str]:
    """``"take {a} from {b}"`` -> a regex over templates capturing the slots ``a`` and ``b`` (anchored)."""
    parts, pos = [], 0
    for m in re.finditer(r"\{(\w+)\}", pattern):
        parts.append(re.escape(pattern[pos:m.start()]))
        # one rule slot stands for exactly one template slot: "use {a}" must not swallow "{object} on {target}"
        parts.append(rf"(?P<{m.group(1)}>\{{\w+\}})")
        pos = m.end()
    parts.append(re.escape(pattern[pos:]))
    return re.compile("^" + "".join(parts) + "$")


_SYNONYM_RX = [(_rule_regex(p), r) for p, r in _SYNONYM_RULES]


def _synonym(template: str) -> str:
    for rx, replacement in _SYNONYM_RX:
        m = rx.match(template)
        if m:
            return replacement.format(**m.groupdict())
    head, _, rest = template.partition(" ")
    if head.lower() in _VERB_SYNONYMS:
        return " ".join(x for x in (_VERB_SYNONYMS[head.lower()], rest) if x)
    return template


#: exact reorderings for slot-less commands (BabyAI), tried before the generic two-argument swap
_REORDER_RULES: dict[str, str] = {"turn left": "left turn", "turn right": "right turn",
                                  "move forward": "forward move", "pick up": "pick it up"}
_TWO_ARGS = re.compile(r"^(?P<verb>.+?) (?P<a>\{\w+\}) (?P<prep>[a-z/]+) (?P<b>\{\w+\})$")


def _reorder(template: str) -> str:
    if template in _REORDER_RULES:
        return _REORDER_RULES[template]
    m = _TWO_ARGS.match(template)
    if m:  # "take {o} from {r}" -> "from {r} take {o}"
        return f"{m['prep']} {m['b']} {m['verb']} {m['a']}"
    return template


def _article(template: str) -> str:
    return _SLOT_TEXT.sub(lambda m: f"the {m.group(0)}", template)


def perturb_template(template: str, scheme: str) -> str:
    """The reworded form of one action template under ``scheme`` (unchanged when no rule applies)."""
    if scheme == "synonym":
        return _synonym(template)
    if scheme == "reorder":
        return _reorder(template)
    if scheme == "article":
        return _article(template)
    if scheme == "combined":
        return _reorder(_synonym(template))
    if scheme in ("none", ""):
        return template
    raise InputError(f"unknown perturbation scheme {scheme!r}; known: {', '.join(SCHEMES)}", field="scheme")


@dataclass(frozen=True)
class _Form:
    original: str
    perturbed: str
    rx_original: re.Pattern[str]
    rx_perturbed: re.Pattern[str]
    rx_aliases: tuple[re.Pattern[str], ...] = ()


def _alias_regexes(template: str) -> tuple[re.Pattern[str], ...]:
    out = []
    for key, aliases in _ORIGINAL_ALIASES.items():
        m = _rule_regex(key).match(template)
        if m:
            out += [_slot_regex(alias.format(**m.groupdict())) for alias in aliases]
    return tuple(out)


def _slot_regex(template: str) -> re.Pattern[str]:
    """A case-insensitive regex with one named group per ``{slot}`` (whitespace-tolerant, like base's)."""
    rx = template_regex(template)
    for name in re.findall(r"\{(\w+)\}", template):
        rx = rx.replace("(.+?)", f"(?P<{name}>.+?)", 1)
    return re.compile(rx, re.IGNORECASE)


class PerturbedEnv(TextEnv):
    """``env`` with its action forms reworded by ``scheme``; actions are mapped back before ``env.step``."""

    def __init__(self, env: TextEnv, scheme: str, *, accept_original: bool = False):
        perturb_template("x", scheme)  # validates the name
        self.env, self.scheme, self.accept_original = env, scheme, accept_original
        self.name = f"{env.name}~{scheme}"
        self._forms: list[_Form] | None = None
        self._script: Script | None = None
        self._last_progress = 0.0

    # --- the template mapping (built from the wrapped script, once) ---
    def _build(self) -> list[_Form]:
        if self._forms is not None:
            return self._forms
        base = self.env.script()
        templates = list(base.available_actions)
        proposed = {t: perturb_template(t, self.scheme) for t in templates}
        # A rewrite is kept only when it stays unambiguous: no two forms collide, and no reworded form is
        # another action's canonical form (the mapping back would be a guess).
        taken: dict[str, str] = {}
        forms: list[_Form] = []
        for t in templates:
            p = proposed[t]
            if p != t and (p.lower() in taken or p.lower() in {x.lower() for x in templates}):
                p = t
            if set(re.findall(r"\{(\w+)\}", p)) != set(re.findall(r"\{(\w+)\}", t)):
                p = t  # a rule must keep the slots
            taken[p.lower()] = t
            forms.append(_Form(t, p, _slot_regex(t), _slot_regex(p), _alias_regexes(t) if p != t else ()))
        actions: dict[str, ActionSpec] = {}
        for form in forms:
            spec = base.available_actions[form.original]
            actions[form.perturbed] = ActionSpec(
                template=form.perturbed, description=spec.description,
                verification_code=template_regex(form.perturbed), parameters=dict(spec.parameters))
        self._script = base.model_copy(update={"available_actions": actions})
        self._forms = forms
        return forms

    @property
    def mapping(self) -> dict[str, str]:
        """Canonical template -> reworded template (unchanged templates included)."""
        return {f.original: f.perturbed for f in self._build()}

    def to_canonical(self, action: str) -> str | None:
        """The engine's command for a reworded action; the text itself if no template matches; None if it
        is the canonical form of a reworded template (not accepted unless ``accept_original``)."""
        text = normalize_action(action)
        forms = self._build()
        for f in forms:
            m = f.rx_perturbed.match(text)
            if m:
                return f.original.format(**{k: v.strip() for k, v in m.groupdict().items()})
        for f in forms:
            if f.perturbed != f.original and (f.rx_original.match(text)
                                              or any(rx.match(text) for rx in f.rx_aliases)):
                return text if self.accept_original else None
        return text

    def to_perturbed(self, command: str) -> str:
        """The reworded form of a canonical engine command (for the oracle and valid-action lists)."""
        text = " ".join(command.split())
        for f in self._build():
            m = f.rx_original.match(text)
            if m:
                return f.perturbed.format(**{k: v.strip() for k, v in m.groupdict().items()})
        return text

    # --- TextEnv ---
    def reset(self) -> str:
        self._forms, self._script = None, None  # a script may depend on the episode's first observation
        self._last_progress = 0.0
        obs = self.env.reset()
        self._build()
        return obs

    def script(self) -> Script:
        self._build()
        assert self._script is not None
        return self._script

    def step(self, action: str) -> StepResult:
        command = self.to_canonical(action)
        if command is None:
            forms = ", ".join(f.perturbed for f in self._build())
            return StepResult(f"Unknown action {action!r}. Use one of these forms: {forms}.", done=False,
                              progress=self._last_progress, error="parameter_error",
                              info={"perturbation": self.scheme})
        result = self.env.step(command)
        self._last_progress = result.progress
        result.info = {**result.info, "canonical_action": command, "perturbation": self.scheme}
        if result.observation.startswith(_VALID_PREFIX):  # the engine lists canonical forms: reword them
            result.observation = self._reword_listing(result.observation)
        return result

    def _reword_listing(self, observation: str) -> str:
        body = observation[len(_VALID_PREFIX):].strip()
        tail = _MORE.search(body)
        more = tail.group(0) if tail else ""
        body = body[: tail.start()] if tail else body.rstrip(".")
        items = [self.to_perturbed(a) for a in body.split(", ") if a]
        return f"{_VALID_PREFIX} {', '.join(items)}{more or '.'}"

    def current_progress(self) -> float:
        return float(getattr(self.env, "current_progress", lambda: 0.0)())

    def valid_actions(self) -> list[str]:
        return [self.to_perturbed(a) for a in self.env.valid_actions()]

    def oracle_action(self) -> str | None:
        action = self.env.oracle_action()
        return None if action is None else self.to_perturbed(action)

    def close(self) -> None:
        self.env.close()


def make_perturbed_env(task: str, episode: int, seed: int = 0, *, scheme: str, accept_original: bool = False,
                       **options: Any) -> PerturbedEnv:
    """Episode ``episode`` of a registered task, wrapped in :class:`PerturbedEnv` (for harness integration)."""
    return PerturbedEnv(load_task(task).make_env(episode, seed, **options), scheme, accept_original=accept_original)


# ------------------------------------------------------------------------------------------ report


def _rates(rows: Sequence[Mapping[str, Any]]) -> tuple[float, float]:
    if not rows:
        return float("nan"), float("nan")
    success = sum(bool(r.get("success")) for r in rows) / len(rows)
    progress = sum(float(r.get("progress") or 0.0) for r in rows) / len(rows)
    return 100.0 * success, 100.0 * progress


def _key(row: Mapping[str, Any]) -> tuple[Any, ...]:
    return (row.get("task"), row.get("episode"), row.get("seed", 0))


def robustness_report(base: Iterable[Mapping[str, Any]],
                      perturbed: Mapping[str, Iterable[Mapping[str, Any]]]) -> dict[str, Any]:
    """Success/progress (in %) without and with each scheme, drops in points, mean and std across schemes.

    Rows are evaluation JSONL rows (``task``, ``episode``, ``seed``, ``success``, ``progress``). Only episodes
    present in the base run *and* in a scheme's run are compared for that scheme (``episodes`` says how many),
    so an interrupted run still compares like with like. Per task and ``overall``.
    """
    base_rows = {_key(r): r for r in base if "success" in r}
    if not base_rows:
        raise InputError("robustness report: the unperturbed run has no episode rows", field="base")
    if not perturbed:
        raise InputError("robustness report: no perturbed run given", field="perturbed")
    schemes = {name: {_key(r): r for r in rows if "success" in r} for name, rows in perturbed.items()}
    tasks = sorted({k[0] for k in base_rows})
    out: dict[str, Any] = {}
    for task in [*tasks, "overall"]:
        entry: dict[str, Any] = {"schemes": {}}
        for name, rows in schemes.items():
            keys = [k for k in rows if k in base_rows and (task == "overall" or k[0] == task)]
            if not keys:
                continue
            b_sr, b_pr = _rates([base_rows[k] for k in keys])
            p_sr, p_pr = _rates([rows[k] for k in keys])
            entry["schemes"][name] = {
                "episodes": len(keys), "base_success": b_sr, "base_progress": b_pr,
                "success": p_sr, "progress": p_pr,
                "success_drop": b_sr - p_sr, "progress_drop": b_pr - p_pr,
            }
        if not entry["schemes"]:
            continue
        per = list(entry["schemes"].values())
        all_keys = [k for k in base_rows if task == "overall" or k[0] == task]
        entry["base_success"], entry["base_progress"] = _rates([base_rows[k] for k in all_keys])
        entry["mean_success_drop"] = statistics.fmean(p["success_drop"] for p in per)
        entry["mean_progress_drop"] = statistics.fmean(p["progress_drop"] for p in per)
        entry["success_std"] = statistics.pstdev([p["success"] for p in per]) if len(per) > 1 else 0.0
        entry["progress_std"] = statistics.pstdev([p["progress"] for p in per]) if len(per) > 1 else 0.0
        out[task] = entry
    return out


def format_robustness(report: Mapping[str, Any]) -> str:
    """A Markdown table of :func:`robustness_report`."""
    lines = ["| task | scheme | episodes | SR base | SR pert. | SR drop | PR base | PR pert. | PR drop |",
             "|---|---|---|---|---|---|---|---|---|"]
    for task, entry in report.items():
        for name, s in entry["schemes"].items():
            lines.append(f"| {task} | {name} | {s['episodes']} | {s['base_success']:.1f} | {s['success']:.1f} | "
                         f"{s['success_drop']:+.1f} | {s['base_progress']:.1f} | {s['progress']:.1f} | "
                         f"{s['progress_drop']:+.1f} |")
        lines.append(f"| {task} | **mean (std)** | | {entry['base_success']:.1f} | | "
                     f"{entry['mean_success_drop']:+.1f} ({entry['success_std']:.1f}) | "
                     f"{entry['base_progress']:.1f} | | {entry['mean_progress_drop']:+.1f} "
                     f"({entry['progress_std']:.1f}) |")
    return "\n".join(lines)


__all__ = ["SCHEMES", "PerturbedEnv", "format_robustness", "make_perturbed_env", "perturb_template",
           "robustness_report"]
