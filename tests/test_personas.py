"""Specification of persona sources: Persona Hub JSONL, text, JSON lists, dedup, the built-in list."""

from __future__ import annotations

import json

import pytest

from agentrefine_lg.errors import InputError
from agentrefine_lg.schema import persona_id
from agentrefine_lg.synthesis.personas import builtin_personas, load_personas


def test_builtin_list_has_at_least_200_distinct_personas():
    personas = builtin_personas()
    assert len(personas) >= 200
    assert len({p.id for p in personas}) == len(personas)
    assert all(len(p.text) > 20 for p in personas)
    assert load_personas() == personas


def test_persona_hub_jsonl_is_read_and_deduplicated(tmp_path):
    path = tmp_path / "hub.jsonl"
    rows = [{"persona": "A chemist who loves  hiking."}, {"persona": "a chemist who loves hiking."},
            {"input persona": "A sailor."}, {"persona": "A baker.", "extra": 1}]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    personas = load_personas(path)
    assert [p.text for p in personas] == ["A chemist who loves hiking.", "A sailor.", "A baker."]
    assert personas[0].id == persona_id("a CHEMIST who loves hiking.")


def test_plain_text_one_per_line_skips_blanks_and_comments(tmp_path):
    path = tmp_path / "p.txt"
    path.write_text("# my personas\nA pilot.\n\n  A pilot.  \nA nurse.\n")
    assert [p.text for p in load_personas(path)] == ["A pilot.", "A nurse."]
    assert [p.text for p in load_personas(path, limit=1)] == ["A pilot."]


def test_json_list(tmp_path):
    path = tmp_path / "p.json"
    path.write_text(json.dumps(["A pilot.", {"persona": "A nurse."}]))
    assert [p.text for p in load_personas(path)] == ["A pilot.", "A nurse."]


def test_bad_rows_name_the_file_and_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"persona": "A pilot."}\n{"persona": "A nurse.",\n')
    with pytest.raises(InputError, match=r"bad.jsonl:2.*invalid JSON"):
        load_personas(path)
    path.write_text('{"name": "A pilot."}\n')
    with pytest.raises(InputError, match=r"bad.jsonl:1.*expected one of the keys"):
        load_personas(path)


def test_missing_or_empty_sources_are_errors(tmp_path):
    with pytest.raises(InputError, match="not found"):
        load_personas(tmp_path / "nope.txt")
    (tmp_path / "empty.txt").write_text("\n# nothing\n")
    with pytest.raises(InputError, match="no personas"):
        load_personas(tmp_path / "empty.txt")
