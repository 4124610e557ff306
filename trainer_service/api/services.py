"""What the views work with: the settings, the store, the executor and the stream slots."""

from __future__ import annotations

from dataclasses import dataclass

from flask import current_app

from squarenet.store import ModelStore
from trainer_service.api.events import StreamSlots
from trainer_service.runner.book import JobBook
from trainer_service.runner.executor import Executor
from trainer_service.settings import Settings


@dataclass(frozen=True)
class Services:
    """Built once per app by ``create_app``."""

    settings: Settings
    store: ModelStore
    executor: Executor
    streams: StreamSlots

    @property
    def book(self) -> JobBook:
        """The executor's job book."""
        return self.executor.book


def services() -> Services:
    """The current app's services."""
    found: Services = current_app.extensions["squarenet"]
    return found
