"""The production broker: a ``BrokerNode`` wired to the real world.

Owns only the wiring: the production ``Env`` (grpc links for peers, a thread-pool executor, the
``os`` filesystem, the system wall clock), the grpc.aio server that exposes the node's services,
and the process's signals. Every decision lives in server/node.py, which the system simulation
runs unchanged with its own Env.
"""

from __future__ import annotations

import asyncio
import signal

import grpc

from server.config import ServerConfig
from server.env import Env, ThreadExecutor
from server.grpc_links import GrpcNetwork
from server.node import BrokerNode, most_caught_up_voter, preferred_priorities
from wire import replog_pb2_grpc as pb_grpc

__all__ = ["Broker", "most_caught_up_voter", "preferred_priorities", "run_broker"]


class Broker:
    def __init__(self, cfg: ServerConfig) -> None:
        self.cfg = cfg
        self.network = GrpcNetwork.from_config(cfg)
        self.executor = ThreadExecutor()
        self.node = BrokerNode(cfg, Env(network=self.network, executor=self.executor))
        self.server: grpc.aio.Server | None = None

    @property
    def log(self):  # type: ignore[no-untyped-def]
        return self.node.log

    async def start(self) -> None:
        await self.node.start()
        opts = [
            ("grpc.max_send_message_length", self.cfg.server.grpc_max_message_bytes),
            ("grpc.max_receive_message_length", self.cfg.server.grpc_max_message_bytes),
            ("grpc.so_reuseport", 0),
        ]
        self.server = grpc.aio.server(options=opts)
        pb_grpc.add_ReplogServicer_to_server(self.node.replog_service, self.server)
        pb_grpc.add_PeerServicer_to_server(self.node.peer_service, self.server)
        self.server.add_insecure_port(self.cfg.node.listen)
        await self.server.start()

    async def shutdown(self, graceful: bool = True) -> None:
        self.node.stopping = True
        if graceful:
            await self.node.transfer_leadership_away()
        if self.server is not None:
            await self.server.stop(grace=0.5)
        await self.node.stop(graceful=False)
        await self.network.close()
        self.executor.shutdown()


async def run_broker(cfg: ServerConfig) -> int:
    broker = Broker(cfg)
    await broker.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGUSR1, broker.node.log_group_status)
    await stop.wait()
    broker.log.info("broker_stopping", reason="signal")
    await broker.shutdown(graceful=True)
    return 0
