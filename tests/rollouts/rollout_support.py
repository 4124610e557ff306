"""Helpers of the rollout tests (import as ``rollouts.rollout_support``)."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from squarenet.store import METADATA_FILE, ModelStore
from trainer_service.rollouts.gate import GATE_FILE


@dataclass(frozen=True)
class Trained:
    """Version folders the real trainer published, by name (``good``, ``other``, ``bad``)."""

    folders: dict[str, Path]

    def publish(
        self, store: ModelStore, name: str, *, sealed_gate: bool = True, model: str = "square"
    ) -> int:
        """Publish a copy of one into ``store`` as the trainer would; its new number.

        ``sealed_gate=False`` leaves ``gate.json`` out, as in a version published before
        gates existed: the trainer then has to measure it itself.
        """
        source = self.folders[name]
        metadata = json.loads((source / METADATA_FILE).read_text(encoding="utf-8"))
        staging = store.staging_dir(model, tag="test")
        ignored = [METADATA_FILE] if sealed_gate else [METADATA_FILE, GATE_FILE]
        shutil.copytree(
            source, staging, dirs_exist_ok=True, ignore=shutil.ignore_patterns(*ignored)
        )
        for key in ("files", "version", "format", "model_name"):
            metadata.pop(key, None)
        return store.publish_version(staging, metadata, model).version
