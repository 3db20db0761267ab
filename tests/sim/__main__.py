"""CLI: ``python -m tests.sim --seeds 0:500 --nodes 5 [--steps N] [--profile P] [--verbose]``.

Prints one line per failing seed (replay it alone with ``--seeds S:S+1``), then a final JSON
line exactly ``{"seeds": N, "violations": K, "steps": S}`` (S = simulated steps in total).
Exit status 1 if any seed violated a property, 0 otherwise.
"""

from __future__ import annotations

import argparse
import json
import sys

from tests.sim.runner import PROFILES, run_seed


def parse_seeds(text: str) -> range:
    if ":" in text:
        lo, hi = text.split(":", 1)
        return range(int(lo), int(hi))
    return range(int(text), int(text) + 1)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.sim", description=__doc__)
    p.add_argument("--seeds", default="0:100", help="half-open range LO:HI, or one seed")
    p.add_argument("--nodes", type=int, default=3, choices=[3, 5])
    p.add_argument("--steps", type=int, default=400, help="steps of the fault phase")
    p.add_argument("--profile", default="default", choices=sorted(PROFILES))
    p.add_argument("--verbose", action="store_true", help="print every event of every seed")
    args = p.parse_args(argv)

    seeds = parse_seeds(args.seeds)
    violations = 0
    total_steps = 0
    for seed in seeds:
        result = run_seed(
            seed, nodes=args.nodes, steps=args.steps, profile=args.profile, verbose=args.verbose
        )
        total_steps += result.steps
        if result.violation is not None:
            violations += 1
            print(result.summary(), flush=True)
        elif args.verbose:
            print(result.summary(), flush=True)
    print(json.dumps({"seeds": len(seeds), "violations": violations, "steps": total_steps}))
    return 1 if violations else 0


if __name__ == "__main__":
    sys.exit(main())
