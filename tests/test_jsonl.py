"""The one JSONL store: durable appends, one rule for a torn last line (cut and reported), loud bad lines."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from agentrefine_lg.errors import InputError
from agentrefine_lg.jsonl import JsonlFile, append_jsonl


def test_appends_are_whole_lines_and_read_back(tmp_path: Path) -> None:
    path = tmp_path / "rows.jsonl"
    with JsonlFile(path) as store:
        assert store.append([{"a": 1}, {"a": 2}]) == 2
        assert store.append([]) == 0
    append_jsonl(path, [{"a": 3}])
    assert JsonlFile(path).read() == [{"a": 1}, {"a": 2}, {"a": 3}]


def test_a_torn_last_line_is_cut_and_reported_never_skipped_silently(tmp_path: Path, caplog) -> None:
    path = tmp_path / "rows.jsonl"
    path.write_text('{"a": 1}\n{"a": 2')  # the writer was killed mid-line
    with caplog.at_level(logging.WARNING, logger="agentrefine_lg"):
        rows = JsonlFile(path).read()
    assert rows == [{"a": 1}]
    assert path.read_text() == '{"a": 1}\n'
    assert "no newline" in caplog.text and str(path) in caplog.text and "7 bytes" in caplog.text


def test_an_append_after_a_torn_line_starts_on_a_line_of_its_own(tmp_path: Path, caplog) -> None:
    path = tmp_path / "rows.jsonl"
    path.write_text('{"a": 1}\n{"a": ')
    with caplog.at_level(logging.WARNING, logger="agentrefine_lg"):
        append_jsonl(path, [{"a": 2}])
    assert JsonlFile(path).read() == [{"a": 1}, {"a": 2}]
    assert "interrupted" in caplog.text


def test_a_bad_complete_line_is_an_error_naming_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "rows.jsonl"
    path.write_text('{"a": 1}\nnot json\n{"a": 3}\n')
    with pytest.raises(InputError, match=r"rows\.jsonl:2"):
        JsonlFile(path).read()
    path.write_text('{"a": 1}\n[1, 2]\n')
    with pytest.raises(InputError, match=r"rows\.jsonl:2.*JSON object"):
        JsonlFile(path).read()


def test_evaluation_reads_its_episodes_through_the_store(tmp_path: Path) -> None:
    from agentrefine_lg.eval.harness import read_rows

    path = tmp_path / "episodes.jsonl"
    path.write_text('{"task": "babyai", "episode": 0}\ngarbage\n')
    with pytest.raises(InputError, match="episodes.jsonl:2"):  # no longer skipped in silence
        read_rows(path)
