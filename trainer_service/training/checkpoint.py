"""A job's training state after a finished epoch, so an interrupted job resumes from there.

``fit`` saves it at most every ``SAVE_SECONDS`` (an epoch of the article's job takes
milliseconds) into the job's folder on the store, atomically: a temporary file renamed over
the last one. It holds what the next epoch depends on (the data and first weights are made
again from its seed), so a resumed job trains only the epochs after it, with the same
arithmetic and batch orders as an uninterrupted run. The job book removes the file when the
job ends (``JobBook.finish``).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from trainer_service.training.reports import EpochReport

SAVE_SECONDS = 1.0
_META = "meta"


@dataclass(frozen=True)
class TrainingState:
    """Everything the epochs after ``len(history)`` depend on."""

    seed: int
    history: list[EpochReport]
    weights: list[np.ndarray]
    optimizer: list[np.ndarray]
    order: dict[str, Any]
    """``bit_generator.state`` of the batch-order generator after the last epoch."""
    stopper: dict[str, Any] | None
    """Early stopping's ``wait``, ``best`` and ``best_epoch``; None when it is off."""
    best_weights: list[np.ndarray] | None

    @property
    def epoch(self) -> int:
        """The last epoch the state includes."""
        return len(self.history)


class Checkpoint:
    """The checkpoint file of one job: load it once, save it as epochs go by."""

    def __init__(self, path: Path, every: float = SAVE_SECONDS) -> None:
        self.path = path
        self.every = every
        self.saved_at = time.monotonic()

    def due(self) -> bool:
        """Whether ``every`` seconds passed since the last save (or the start)."""
        return time.monotonic() - self.saved_at >= self.every

    def save(self, state: TrainingState) -> None:
        """Replace the checkpoint with ``state`` in one rename."""
        meta = {
            "seed": state.seed,
            "history": [report.__dict__ for report in state.history],
            "order": state.order,
            "stopper": state.stopper,
            "weights": len(state.weights),
            "optimizer": len(state.optimizer),
            "best_weights": None if state.best_weights is None else len(state.best_weights),
        }
        arrays = {f"w{i}": value for i, value in enumerate(state.weights)}
        arrays |= {f"o{i}": value for i, value in enumerate(state.optimizer)}
        arrays |= {f"b{i}": value for i, value in enumerate(state.best_weights or [])}
        arrays[_META] = np.array(json.dumps(meta))
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        with temporary.open("wb") as stream:
            np.savez(stream, allow_pickle=False, **arrays)
        temporary.replace(self.path)
        self.saved_at = time.monotonic()

    def load(self) -> TrainingState | None:
        """The saved state, or None when there is none or it cannot be read (start over)."""
        try:
            with np.load(self.path, allow_pickle=False) as saved:
                meta = json.loads(str(saved[_META]))
                weights = [saved[f"w{i}"] for i in range(meta["weights"])]
                optimizer = [saved[f"o{i}"] for i in range(meta["optimizer"])]
                best = meta["best_weights"]
                best_weights = None if best is None else [saved[f"b{i}"] for i in range(best)]
        except (OSError, ValueError, KeyError, TypeError):
            return None  # none, or one we cannot read: it costs the epochs it held, nothing else
        return TrainingState(
            seed=int(meta["seed"]),
            history=[EpochReport(**report) for report in meta["history"]],
            weights=weights,
            optimizer=optimizer,
            order=meta["order"],
            stopper=meta["stopper"],
            best_weights=best_weights,
        )
