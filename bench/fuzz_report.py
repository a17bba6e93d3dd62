#!/usr/bin/env python
"""The fuzzing report as markdown, from the JSON that tests/fuzz writes (OPENMAGNET_FUZZ_REPORT).

    OPENMAGNET_FUZZ=long OPENMAGNET_FUZZ_SECONDS=60 OPENMAGNET_FUZZ_REPORT=long.json python -m pytest tests/fuzz
    python bench/fuzz_report.py long.json [more.json ...] > bench/results/fuzz.md

With several reports, a later one replaces an earlier one's rows target by target (a rerun of one file).
"""
from __future__ import annotations

import json
import sys


def main(paths: list) -> None:
    rows: dict = {}
    profiles = set()
    for path in paths:
        with open(path, encoding="utf-8") as f:
            report = json.load(f)
        profiles.add(report["profile"])
        for target, cases in report["cases"].items():
            rows[target] = (cases, report["seconds"].get(target, 0.0), report["errors"].get(target, {}),
                            report["messages"].get(target, {}), path)
    print(f"# Fuzzing: cases per target ({', '.join(sorted(profiles))} profile)\n")
    print("Every case ended in the documented one-line error or a valid result; a case running past the hang limit,")
    print("any other exception type, or a message of more than one line would have failed the run.\n")
    print("| target | cases | seconds | ended in (cases) | commonest messages (gist) |")
    print("|---|---|---|---|---|")
    for target, (cases, seconds, errors, messages, _) in sorted(rows.items()):
        ended = ", ".join(f"{kind} {count}" for kind, count in sorted(errors.items(), key=lambda kv: -kv[1]))
        valid = cases - sum(errors.values())
        ended = f"{ended}, no error {valid}" if ended else f"no error {valid}"
        gist = "; ".join(f"{text.replace('|', '/')[:70]} ({count})" for text, count in list(messages.items())[:2])
        print(f"| {target} | {cases} | {seconds:.1f} | {ended} | {gist} |")
    total = sum(r[0] for r in rows.values())
    print(f"\n{total} cases over {len(rows)} targets; from {', '.join(paths)}.")


if __name__ == "__main__":
    main(sys.argv[1:])
