"""The agent tests' publisher and device config, for the tests that run a real fleet."""

from agent.conftest import device_config, publisher

__all__ = ["device_config", "publisher"]
