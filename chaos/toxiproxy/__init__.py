"""A Toxiproxy-compatible TCP fault proxy on asyncio, bundled so the chaos suite runs where the
``toxiproxy-server`` binary is not installed.

Same HTTP API, JSON shapes and status codes as upstream Toxiproxy (2.x) for the toxics it
implements: latency, bandwidth, timeout, reset_peer, limit_data, slicer, slow_close and noop.
Start it with ``python -m chaos.toxiproxy`` or :func:`chaos.toxiproxy.launcher.start_toxiproxy`;
drive it with toxiproxy-python or any Toxiproxy client. See docs/chaos-toxiproxy.md.
"""
