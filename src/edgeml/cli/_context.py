"""State shared by CLI commands: global flags, settings (loaded once), consoles."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console

from edgeml.observability import setup_tracing
from edgeml.settings import Settings, load_settings

__all__ = ["CliState", "console", "err_console"]

console = Console(highlight=False, soft_wrap=True)
# Errors are never hard-wrapped: a message must stay one greppable line in logs.
err_console = Console(stderr=True, highlight=False, soft_wrap=True)


@dataclass
class CliState:
    debug: bool = False
    config: Path | None = None
    home: Path | None = None
    _settings: Settings | None = field(default=None, repr=False)

    def settings(self) -> Settings:
        if self._settings is None:
            overrides = {"home": self.home} if self.home is not None else None
            self._settings = load_settings(config_file=self.config, overrides=overrides)
            setup_tracing(self._settings.tracing)  # every command that reads settings may trace
        return self._settings
