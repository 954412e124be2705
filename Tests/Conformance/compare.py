#!/usr/bin/env python3
"""Compares Autobahn verdicts per case: through Sluice must never be worse than direct.

usage: compare.py BASELINE.json REPORT_INDEX.json AGENT [--cases "1.*,2.*"] [--write-markdown FILE]

BASELINE.json maps case id -> {"behavior", "behaviorClose"} for the direct run (committed).
REPORT_INDEX.json is wstest's index.json; AGENT selects the through-Sluice run in it.
OK and NON-STRICT count as equal (the "fail fast" timing cases flip between runs).
"""
import json
import sys

RANK = {"OK": 4, "NON-STRICT": 4, "INFORMATIONAL": 2, "UNIMPLEMENTED": 1, "FAILED": 0}
ORDER = ["OK", "NON-STRICT", "INFORMATIONAL", "UNIMPLEMENTED", "FAILED"]


def counts(results):
    tally = {name: 0 for name in ORDER}
    for verdict in results.values():
        tally[verdict["behavior"]] = tally.get(verdict["behavior"], 0) + 1
    return tally


def case_key(case):
    return [int(part) if part.isdigit() else part for part in case.split(".")]


def main():
    baseline = json.load(open(sys.argv[1]))
    if "--cases" in sys.argv:
        # The agent ran a subset on purpose: compare those cases only.
        prefixes = [p.rstrip("*") for p in sys.argv[sys.argv.index("--cases") + 1].split(",")]
        baseline = {case: v for case, v in baseline.items() if any(case.startswith(p) for p in prefixes)}
    index = json.load(open(sys.argv[2]))
    agent = sys.argv[3]
    if agent not in index:
        sys.exit(f"no results for agent {agent} in {sys.argv[2]}")
    through = {case: {"behavior": r["behavior"], "behaviorClose": r["behaviorClose"]} for case, r in index[agent].items()}
    worse = []
    missing = sorted(set(baseline) - set(through), key=case_key)
    for case in sorted(baseline, key=case_key):
        if case not in through:
            continue
        direct, via = baseline[case]["behavior"], through[case]["behavior"]
        if RANK.get(via, 0) < RANK.get(direct, 0):
            worse.append((case, direct, via))
    direct_counts, via_counts = counts(baseline), counts(through)
    print(f"{'':14}" + "".join(f"{name:>15}" for name in ORDER) + f"{'cases':>8}")
    print(f"{'direct':14}" + "".join(f"{direct_counts[n]:>15}" for n in ORDER) + f"{len(baseline):>8}")
    print(f"{agent:14}" + "".join(f"{via_counts[n]:>15}" for n in ORDER) + f"{len(through):>8}")
    for case, direct, via in worse:
        print(f"WORSE {case}: direct {direct}, through sluice {via}")
    for case in missing:
        print(f"MISSING {case}: no verdict through sluice")
    if "--write-markdown" in sys.argv:
        path = sys.argv[sys.argv.index("--write-markdown") + 1]
        with open(path, "a") as out:
            out.write(f"| {agent} | " + " | ".join(str(via_counts[n]) for n in ORDER) + f" | {len(through)} |\n")
    if worse or missing:
        sys.exit(1)
    print(f"{agent}: no case worse than direct")


if __name__ == "__main__":
    main()
