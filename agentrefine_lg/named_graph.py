"""``NamedStateGraph``: a ``StateGraph`` that remembers the name its factory was given.

Our factories return uncompiled graphs (as langgraph-supervisor and -swarm do), yet a supervisor, a swarm
and LangGraph Studio address a compiled agent by its ``name``. ``compile()`` therefore defaults ``name`` to
the factory's, so ``create_refine_agent(model, tools=t, name="math").compile()`` is the agent "math".
"""

from __future__ import annotations

from typing import Any

from langgraph.graph import StateGraph


class NamedStateGraph(StateGraph):
    """A ``StateGraph`` whose ``compile(name=None)`` uses :attr:`name`."""

    def __init__(self, state_schema: Any, context_schema: Any = None, *, name: str, **kwargs: Any) -> None:
        super().__init__(state_schema, context_schema, **kwargs)
        self.name = name

    def compile(self, *args: Any, name: str | None = None, **kwargs: Any):  # type: ignore[override]
        return super().compile(*args, name=name or self.name, **kwargs)


def check_state_schema(state_schema: Any, base: Any, factory: str) -> None:
    """A custom ``state_schema`` must carry every key of ``base`` (it may add its own)."""
    from typing import get_type_hints

    try:
        have = set(get_type_hints(state_schema, include_extras=True))
    except Exception as exc:
        raise TypeError(f"{factory}: state_schema {state_schema!r} is not a TypedDict/dataclass/pydantic model: {exc}") from exc
    missing = sorted(set(get_type_hints(base, include_extras=True)) - have)
    if missing:
        raise TypeError(f"{factory}: state_schema must extend {base.__name__}; it lacks {missing}")


def with_user_keys(public: Any, state_schema: Any | None, base: Any) -> Any:
    """``public`` (an input or output schema) plus the keys a custom ``state_schema`` adds to ``base``:
    a user's own keys flow in from, and back to, the parent app; our working keys stay private."""
    from typing import get_type_hints

    from typing_extensions import TypedDict

    if state_schema is None:
        return public
    ours = set(get_type_hints(base, include_extras=True))
    extra = {k: v for k, v in get_type_hints(state_schema, include_extras=True).items() if k not in ours}
    if not extra:
        return public
    fields = {**get_type_hints(public, include_extras=True), **extra}
    return TypedDict(f"{getattr(state_schema, '__name__', 'State')}{public.__name__}", fields, total=False)  # type: ignore[operator]


__all__ = ["NamedStateGraph", "check_state_schema", "with_user_keys"]
