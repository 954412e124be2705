#!/usr/bin/env python3
"""Compares Autobahn verdicts per case: through Sluice must never be worse than direct.

usage: compare.py BASELINE.json REPORT_INDEX.json AGENT [--cases "1.*,2.*"] [--write-markdown FILE]
       compare.py --make-baseline REPORT_INDEX.json AGENT [AGENT ...]   (baseline JSON on stdout)

BASELINE.json maps case id -> {"behavior", "behaviorClose", "runs"}: "runs" lists the case's
verdict in each direct run (three when refreshed), "behavior" is the most common of them.
REPORT_INDEX.json is wstest's index.json; AGENT selects the through-Sluice run in it.

A verdict through Sluice is worse when it ranks below the direct runs' middle verdict
(FAILED < UNIMPLEMENTED < INFORMATIONAL < NON-STRICT = OK), and NON-STRICT is worse than OK for
a case that was OK direct in at least two of three runs: the "fail fast" cases flip between runs
direct, so only a case that is stably OK direct can hold Sluice to OK.
"""
import json
import sys
from collections import Counter

RANK = {"OK": 4, "NON-STRICT": 4, "INFORMATIONAL": 2, "UNIMPLEMENTED": 1, "FAILED": 0}
ORDER = ["OK", "NON-STRICT", "INFORMATIONAL", "UNIMPLEMENTED", "FAILED"]


def counts(results):
    tally = {name: 0 for name in ORDER}
    for verdict in results.values():
        tally[verdict["behavior"]] = tally.get(verdict["behavior"], 0) + 1
    return tally


def case_key(case):
    return [int(part) if part.isdigit() else part for part in case.split(".")]


def runs(entry):
    return entry.get("runs") or [entry["behavior"]]


def direct_rank(entry):
    ranks = sorted(RANK.get(verdict, 0) for verdict in runs(entry))
    return ranks[(len(ranks) - 1) // 2]


def stably_ok(entry):
    verdicts = runs(entry)
    return len(verdicts) >= 3 and verdicts.count("OK") * 3 >= len(verdicts) * 2


def is_worse(entry, via):
    if RANK.get(via, 0) < direct_rank(entry):
        return True
    return via == "NON-STRICT" and stably_ok(entry)


def make_baseline(index_path, agents):
    index = json.load(open(index_path))
    baseline = {}
    for case in sorted(index[agents[0]], key=case_key):
        verdicts = [index[agent][case]["behavior"] for agent in agents if case in index.get(agent, {})]
        # The most common verdict; a tie goes to the better one.
        tally = Counter(verdicts)
        behavior = max(tally, key=lambda verdict: (tally[verdict], RANK.get(verdict, 0), verdict == "OK"))
        baseline[case] = {"behavior": behavior, "behaviorClose": index[agents[0]][case]["behaviorClose"], "runs": verdicts}
    print(json.dumps(baseline, indent=1, sort_keys=True))


def main():
    if sys.argv[1] == "--make-baseline":
        make_baseline(sys.argv[2], sys.argv[3:])
        return
    baseline = json.load(open(sys.argv[1]))
    # The agent may have run a subset on purpose (--cases): compare (and count) those cases only.
    # ("12.*" is every case of group 12; "12.1.7" is that case alone, not 12.1.70.)
    patterns = sys.argv[sys.argv.index("--cases") + 1].split(",") if "--cases" in sys.argv else ["*"]
    prefixes = [p.rstrip("*") for p in patterns if p.endswith("*")]
    exact = {p for p in patterns if not p.endswith("*")}

    def chosen(case):
        return case in exact or any(case.startswith(p) for p in prefixes)

    baseline = {case: v for case, v in baseline.items() if chosen(case)}
    index = json.load(open(sys.argv[2]))
    agent = sys.argv[3]
    if agent not in index:
        sys.exit(f"no results for agent {agent} in {sys.argv[2]}")
    through = {case: {"behavior": r["behavior"], "behaviorClose": r["behaviorClose"]}
               for case, r in index[agent].items() if chosen(case)}
    worse = []
    missing = sorted(set(baseline) - set(through), key=case_key)
    for case in sorted(baseline, key=case_key):
        if case not in through:
            continue
        via = through[case]["behavior"]
        if is_worse(baseline[case], via):
            worse.append((case, "/".join(runs(baseline[case])), via))
    direct_counts, via_counts = counts(baseline), counts(through)
    stable = sum(1 for entry in baseline.values() if stably_ok(entry))
    print(f"{'':14}" + "".join(f"{name:>15}" for name in ORDER) + f"{'cases':>8}")
    print(f"{'direct':14}" + "".join(f"{direct_counts[n]:>15}" for n in ORDER) + f"{len(baseline):>8}")
    print(f"{agent:14}" + "".join(f"{via_counts[n]:>15}" for n in ORDER) + f"{len(through):>8}")
    print(f"({stable} cases OK direct in at least two of three runs: NON-STRICT there counts as worse)")
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
