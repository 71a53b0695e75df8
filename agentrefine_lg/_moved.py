"""Old module paths of modules that moved into the ``synthesis/`` and ``serving/`` subpackages (issue 29).

``import agentrefine_lg.chat_model`` (or ``.serve``, ``.runner``, ``.grounded.engine``...) still works: the
finder below answers an old name with the module at its new path -- the very same module object, so
``isinstance`` checks and ``monkeypatch.setattr`` on either name agree -- and warns once per name.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
import warnings
from types import ModuleType

MOVED: dict[str, str] = {
    "agentrefine_lg.runner": "agentrefine_lg.synthesis.runner",
    "agentrefine_lg.llm_roles": "agentrefine_lg.synthesis.llm_roles",
    "agentrefine_lg.roles": "agentrefine_lg.synthesis.roles",
    "agentrefine_lg.teachers": "agentrefine_lg.synthesis.teachers",
    "agentrefine_lg.personas": "agentrefine_lg.synthesis.personas",
    "agentrefine_lg.grounded": "agentrefine_lg.synthesis.grounded",
    "agentrefine_lg.serve": "agentrefine_lg.serving.server",
    "agentrefine_lg.chat_model": "agentrefine_lg.serving.chat_model",
    "agentrefine_lg.local_model": "agentrefine_lg.serving.local_model",
    "agentrefine_lg.quickstart": "agentrefine_lg.commands.quickstart",
}
"""Old dotted name -> new dotted name; submodules of a moved package follow it (``grounded.engine``)."""


def new_name(old: str) -> str | None:
    """Where the module once called ``old`` lives now, or None if it did not move."""
    for before, after in MOVED.items():
        if old == before or old.startswith(before + "."):
            return after + old[len(before):]
    return None


class _Alias(importlib.abc.Loader):
    def __init__(self, target: str):
        self.target = target
        self.real_spec: importlib.machinery.ModuleSpec | None = None

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        module = importlib.import_module(self.target)
        self.real_spec = module.__spec__
        return module

    def exec_module(self, module: ModuleType) -> None:
        # already executed under its new name; the import system has just set the alias's spec on it: put the
        # module's own back, so it still knows its real name (pickling, reload)
        module.__spec__ = self.real_spec


class MovedModuleFinder(importlib.abc.MetaPathFinder):
    """Resolves the old names in :data:`MOVED` to the moved modules."""

    def find_spec(self, fullname: str, path: object = None, target: object = None):
        new = new_name(fullname)
        if new is None:
            return None
        warnings.warn(f"{fullname} moved to {new}; import it from there", DeprecationWarning, stacklevel=2)
        spec = importlib.machinery.ModuleSpec(fullname, _Alias(new))
        return spec


def install() -> None:
    """Put the finder on ``sys.meta_path`` once, and register the old names of modules already imported.

    The registration matters for ``agentrefine_lg.chat_model``: importing a submodule for the first time sets it
    as an attribute of its package, which would replace the package's ``chat_model`` *function*; a name found in
    ``sys.modules`` is not loaded again, so nothing is replaced.
    """
    for before, after in MOVED.items():
        if after in sys.modules:
            sys.modules.setdefault(before, sys.modules[after])
    if not any(isinstance(f, MovedModuleFinder) for f in sys.meta_path):
        # first: a moved package's old name must not reach the path finder, which would load a second copy of
        # its submodules under the old names
        sys.meta_path.insert(0, MovedModuleFinder())
