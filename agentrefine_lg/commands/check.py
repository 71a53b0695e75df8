"""``agentrefine check FILE...``: verify scripts, trajectories and sample files; exit 1 if any record fails.

Accepted inputs: a script JSON (paper keys); a trajectory JSON list (with ``--script``); JSON/JSONL records with
``script`` + ``trajectory`` (our samples, synthesis output); sample rows without them get a structural check only.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from agentrefine_lg.checks import CheckReport, check_script, check_trajectory
from agentrefine_lg.convert import iter_records, load_json_file, row_to_sample
from agentrefine_lg.errors import InputError


def cli_add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("files", nargs="+", help="script / trajectory / sample files (.json or .jsonl)")
    parser.add_argument("--script", help="the script that bare trajectory files (JSON lists of turns) belong to")
    parser.add_argument("--min-pairs", type=int, default=None,
                        help="required error->refine pairs (default: 2, the paper's; a record's own 'check' settings, "
                             "such as a refine-agent trace's, apply unless this is given)")
    parser.add_argument("--json", action="store_true", help="print one JSON report per record")
    parser.add_argument("--quiet", "-q", action="store_true", help="print failures and the total only")


def _is_script(obj: Any) -> bool:
    return isinstance(obj, Mapping) and ("Available Actions" in obj or "available_actions" in obj)


def _is_turn_list(obj: Any) -> bool:
    return isinstance(obj, list) and bool(obj) and all(isinstance(t, Mapping) and "role" in t for t in obj)


def _load_json(path: str) -> Any:
    return load_json_file(path)  # every hostile-input case is a one-line InputError there


def _record_check(record: Mapping[str, Any], min_pairs: int | None) -> dict[str, Any]:
    """check_trajectory settings for one record: its own ``check`` (refine-agent traces), then the CLI's."""
    own = record.get("check") if isinstance(record.get("check"), Mapping) else {}
    settings = {"min_pairs": int(own.get("min_pairs", 2)), "require_completion": bool(own.get("require_completion", True)),
                "dm_authoritative": bool(own.get("dm_authoritative", False))}
    if min_pairs is not None:
        settings["min_pairs"] = min_pairs
    return settings


def check_file(path: str, *, script: Any = None, min_pairs: int | None = None):
    """Yield ``(where, report)`` for every record of one file."""
    default_pairs = 2 if min_pairs is None else min_pairs
    p = Path(path)
    if not p.exists():
        raise InputError("no such file", where=path)
    if p.suffix == ".json":
        doc = _load_json(path)
        if _is_script(doc):
            yield path, check_script(doc)
            return
        if _is_turn_list(doc):
            if script is None:
                raise InputError("this is a bare trajectory (a list of turns): pass its script with --script", where=path)
            yield path, check_trajectory(script, doc, min_pairs=default_pairs)
            return
    for where, record in iter_records(path):
        if _is_script(record):
            yield where, check_script(record)
        elif _is_turn_list(record):
            if script is None:
                raise InputError("a bare trajectory needs its script: pass --script", where=where)
            yield where, check_trajectory(script, record, min_pairs=default_pairs)
        elif isinstance(record, Mapping) and "script" in record and "trajectory" in record:
            yield where, check_trajectory(record["script"], record["trajectory"], **_record_check(record, min_pairs))
        else:
            sample = row_to_sample(record, where=where)  # raises InputError naming the field
            report = CheckReport(turns=len(sample.messages))
            report.warnings.append("no script/trajectory in this record: structure checked only")
            if not sample.trainable_turns:
                report.warnings.append("no trainable assistant turn")
            yield where, report


def cli_run(args: argparse.Namespace) -> int:
    script = _load_json(args.script) if args.script else None
    failed = total = 0
    for path in args.files:
        for where, report in check_file(path, script=script, min_pairs=args.min_pairs):
            total += 1
            failed += not report.ok
            if args.json:
                print(json.dumps({"record": where, **report.to_dict()}, ensure_ascii=False))
            elif not (args.quiet and report.ok):
                status = "OK  " if report.ok else "FAIL"
                print(f"{status} {where}: {report.summary()}")
                for warning in report.warnings:
                    print(f"     warning: {warning}")
    if not args.json:
        print(f"checked {total} record(s): {total - failed} ok, {failed} with problems", file=sys.stderr if args.quiet else sys.stdout)
    return 1 if failed else 0
