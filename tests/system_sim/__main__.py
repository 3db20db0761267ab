"""CLI: ``python -m tests.system_sim --seeds 0:200 --brokers 3 [--dcs 3] [--profile P]``.

Runs each seed (see runner.py), prints one replayable ``FAIL`` line per failing seed, and ends
with exactly the JSON line ``{"seeds": N, "violations": K, "steps": S}`` (K = failing seeds,
S = event-loop steps over all seeds). Exit status 1 if any seed failed, else 0.

Determinism needs a fixed ``PYTHONHASHSEED`` (set and dict iteration over str/bytes keys): if it
is not set, the command re-executes itself with ``PYTHONHASHSEED=0`` before doing anything.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time


def _pin_hash_seed() -> None:
    if os.environ.get("PYTHONHASHSEED") is None:
        env = dict(os.environ, PYTHONHASHSEED="0")
        os.execve(sys.executable, [sys.executable, "-m", "tests.system_sim", *sys.argv[1:]], env)


def parse_seeds(text: str) -> range:
    if ":" in text:
        lo, hi = text.split(":", 1)
        return range(int(lo), int(hi))
    return range(int(text), int(text) + 1)


def main(argv: list[str] | None = None) -> int:
    from tests.system_sim.faults import PROFILES
    from tests.system_sim.runner import Budget, replay_command, run_seed

    p = argparse.ArgumentParser(prog="python -m tests.system_sim", description=__doc__)
    p.add_argument("--seeds", default="0:20", help="half-open range LO:HI, or one seed")
    p.add_argument("--brokers", type=int, default=3)
    p.add_argument("--dcs", type=int, default=1, choices=[1, 2, 3])
    p.add_argument("--profile", default="default", choices=sorted(PROFILES))
    p.add_argument(
        "--seed-steps", type=int, default=None, help="event-loop step budget of one seed"
    )
    p.add_argument("--fault-s", type=float, default=None, help="virtual seconds of faults")
    p.add_argument(
        "--verbose",
        action="store_true",
        help="a summary line per seed; the history and broker log tail of failing seeds",
    )
    args = p.parse_args(argv)

    budget = Budget()
    if args.seed_steps is not None:
        budget = dataclasses.replace(budget, max_steps=args.seed_steps)
    if args.fault_s is not None:
        budget = dataclasses.replace(budget, fault_s=args.fault_s)
    seeds = parse_seeds(args.seeds)
    failing = 0
    total_steps = 0
    started = time.perf_counter()
    for seed in seeds:
        result = run_seed(
            seed, args.brokers, args.dcs, args.profile, budget=budget, keep_history=args.verbose
        )
        total_steps += result.steps
        if args.verbose:
            print(result.summary(), flush=True)
        if not result.ok:
            failing += 1
            extra = ""
            if args.seed_steps is not None:
                extra += f" --seed-steps {args.seed_steps}"
            if args.fault_s is not None:
                extra += f" --fault-s {args.fault_s}"
            replay = replay_command(seed, args.brokers, args.dcs, args.profile, extra.strip())
            more = len(result.violations) - 1
            first = result.violations[0] + (f" (+{more} more)" if more else "")
            print(
                f"FAIL seed={seed} brokers={args.brokers} dcs={args.dcs} "
                f"profile={args.profile}: {first}  replay: {replay}",
                flush=True,
            )
            if args.verbose:
                for v in result.violations:
                    print(f"  violation: {v}")
                if result.history is not None:
                    print("  history (last 200 ops):")
                    print(result.history.dump(200))
                print("  broker log tail:")
                for line in result.log_tail:
                    print(f"  {line}")
    if args.verbose:
        print(f"wall {time.perf_counter() - started:.1f}s", file=sys.stderr)
    print(json.dumps({"seeds": len(seeds), "violations": failing, "steps": total_steps}))
    return 1 if failing else 0


if __name__ == "__main__":
    _pin_hash_seed()
    sys.exit(main())
