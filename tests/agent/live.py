"""An agent running in this process with its real HTTP server (uvicorn, the body guard) on
127.0.0.1 and a free port, for tests that need its threads and its sockets together."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx

from edgeml.agent.config import AgentConfig
from edgeml.agent.run import Agent


@contextmanager
def live_agent(config: AgentConfig) -> Iterator[tuple[Agent, httpx.Client]]:
    agent = Agent(config)
    sock = agent.bind()
    server = agent.server()
    agent.start()
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "the agent's server did not start"
        time.sleep(0.01)
    host, port = sock.getsockname()[:2]
    client = httpx.Client(base_url=f"http://{host}:{port}", timeout=5)
    try:
        yield agent, client
    finally:
        client.close()
        server.should_exit = True
        thread.join(10)
        agent.stop()
        sock.close()
