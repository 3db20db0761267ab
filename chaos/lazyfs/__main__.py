"""Command line of LazyFS (see docs/chaos-lazyfs.md).

python -m chaos.lazyfs MOUNTPOINT --backing DIR [--control SOCK] [--debug]
    serves until ``fusermount3 -u MOUNTPOINT``
python -m chaos.lazyfs ctl SOCK ping|status|sync|crash [SEED]
    one control command; prints its JSON reply
python -m chaos.lazyfs check
    exit 0 when FUSE is usable here, else 1 with what to install
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

from chaos.lazyfs.mount import fuse_unavailable_reason, send


def main(argv: list[str]) -> int:
    if argv[:1] == ["check"]:
        reason = fuse_unavailable_reason()
        print(reason or "FUSE is usable: LazyFS can mount here")
        return 1 if reason else 0
    if argv[:1] == ["ctl"]:
        if len(argv) < 3:
            print("usage: python -m chaos.lazyfs ctl SOCK COMMAND [ARGS]", file=sys.stderr)
            return 2
        print(json.dumps(send(argv[1], *argv[2:])))
        return 0
    parser = argparse.ArgumentParser(prog="python -m chaos.lazyfs")
    parser.add_argument("mountpoint")
    parser.add_argument("--backing", required=True, help="the durable image (a directory)")
    parser.add_argument("--control", help="Unix socket for ping/status/sync/crash")
    parser.add_argument("--parent-pid", type=int, help="unmount and exit when this process is gone")
    parser.add_argument("--debug", action="store_true", help="libfuse's request trace")
    parser.add_argument(
        "--verbose", action="store_true", help="log every error a callback returns, with traceback"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING)
    reason = fuse_unavailable_reason()
    if reason is not None:
        print(f"lazyfs: FUSE is not usable here: {reason}", file=sys.stderr)
        return 1
    from chaos.lazyfs.fs import mount  # imports mfusepy, which needs libfuse

    mount(args.mountpoint, args.backing, args.control, debug=args.debug, parent=args.parent_pid)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
