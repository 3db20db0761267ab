"""Run the API server and its proxies until told to stop."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from pathlib import Path

from chaos.toxiproxy.api import Api
from chaos.toxiproxy.httpserver import serve


async def run(host: str, port: int, config: str | None = None) -> None:
    api = Api()
    if config:
        # Like upstream's -config: a bad file is reported and the server starts anyway.
        try:
            body = Path(config).read_bytes()
        except OSError as exc:
            print(f"toxiproxy: error reading config file {config}: {exc}", file=sys.stderr)
        else:
            proxies, err = await api.collection.populate(body)
            if err is not None:
                print(f"toxiproxy: failed to populate proxies: {err.message}", file=sys.stderr)
            else:
                print(f"toxiproxy: populated {len(proxies)} proxies from file", file=sys.stderr)
    server = await serve(api.handle, host, port)
    bound = server.sockets[0].getsockname()
    # One line on stdout with the bound address: the launcher reads it when asked for port 0.
    print(json.dumps({"listening": f"{bound[0]}:{bound[1]}"}), flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    # SIGUSR1 prints every task's stack to stderr: how to see where a stuck proxy waits.
    loop.add_signal_handler(signal.SIGUSR1, dump_tasks)
    try:
        await stop.wait()
    finally:
        server.close()
        await api.collection.shutdown()


def dump_tasks() -> None:
    tasks = asyncio.all_tasks()
    print(f"toxiproxy: {len(tasks)} tasks", file=sys.stderr)
    for task in tasks:
        task.print_stack(limit=8, file=sys.stderr)
    sys.stderr.flush()
