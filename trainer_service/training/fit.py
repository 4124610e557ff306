"""Mini-batch Adam on the article's network, one XLA-compiled program per epoch.

Keras ``fit`` runs each gradient step as its own call from Python (≈ 2 ms of overhead per
step on this CPU, for ≈ 20 µs of arithmetic). Here one ``tf.function(jit_compile=True)``
runs a whole epoch: gather the shuffled rows, loop over every batch (each one gradient
step with Keras' Adam, the last partial batch included), then the validation loss. Python
is back once per epoch, so ``on_epoch`` and ``should_stop`` still see every epoch. The
arithmetic is the same as ``fit``'s: same epochs, same batches, same optimizer.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from trainer_service.params import TrainingParams
from trainer_service.training.checkpoint import Checkpoint, TrainingState
from trainer_service.training.data import TrainingData
from trainer_service.training.reports import EpochReport, TrainingCancelled, TrainingDiverged

EpochProgram = Callable[[Any], tuple[Any, Any]]
_STOPPER = {"wait": int, "best": float, "best_epoch": int}  # early stopping's checkpointed state


@dataclass(frozen=True)
class FitResult:
    """What happened during training; the model holds the final (or best) weights."""

    history: list[EpochReport]
    seconds: float
    """Wall time of the epochs, XLA compilation included."""
    cpu_seconds: float
    """CPU time this process spent on them (all threads): steadier than wall time on a busy machine."""
    best_epoch: int | None
    """1-based epoch whose weights were kept when early stopping is on."""
    gradient_steps: int
    """Optimizer updates applied: epochs run × batches per epoch, as ``fit`` would do."""

    @property
    def stopped_early(self) -> bool:
        """Whether early stopping ended training before the planned epochs."""
        return bool(self.history) and len(self.history) < self.history[0].epochs


def use_one_intra_op_thread() -> bool:
    """Run TensorFlow's kernels on one thread, if this process has not started TensorFlow yet.

    A job's process trains one tiny network: splitting its [1000, 10] operations over the
    intra-op thread pool costs more in synchronisation than it gains (measured here: ≈ 40 %
    less CPU time per epoch on one thread), and a single-threaded job leaves the other core
    to the web service and to concurrent jobs. Returns False, changing nothing, when
    TensorFlow's runtime is already up (tests, benchmarks, a caller that configured it).
    """
    try:
        tf.config.threading.set_intra_op_parallelism_threads(1)
    except RuntimeError:
        return False
    return True


def fit(
    model: Any,
    data: TrainingData,
    params: TrainingParams,
    rng: np.random.Generator,
    *,
    on_epoch: Callable[[EpochReport], None],
    should_stop: Callable[[], bool],
    checkpoint: Checkpoint | None = None,
    resume: TrainingState | None = None,
    seed: int = 0,
) -> FitResult:
    """Train ``model`` in place for ``params.epochs`` epochs (fewer with early stopping).

    With ``resume``, training goes on after its last epoch as if it had never stopped;
    with ``checkpoint``, the state is saved there as epochs go by (``seed`` is saved with it).
    """
    started, cpu_started = time.perf_counter(), time.process_time()
    optimizer = keras.optimizers.Adam(learning_rate=params.learning_rate)
    optimizer.build(model.trainable_variables)
    run_epoch = _compile_epoch(model, optimizer, data, params.batch_size)
    stopper = _early_stopping(model, params.early_stopping_patience)
    history = [] if resume is None else _restore(resume, model, optimizer, rng, stopper)

    def save() -> None:
        """Checkpoint what the epochs after the last one depend on."""
        if checkpoint is None or not history:
            return
        best = None if stopper is None else stopper.best_weights
        state = (
            None if stopper is None else {k: t(getattr(stopper, k)) for k, t in _STOPPER.items()}
        )
        checkpoint.save(
            TrainingState(
                seed=seed,
                history=list(history),
                weights=[np.asarray(w) for w in model.get_weights()],
                optimizer=[np.asarray(v.numpy()) for v in optimizer.variables],
                order=dict(rng.bit_generator.state),
                stopper=state,
                best_weights=None if best is None else [np.asarray(w) for w in best],
            )
        )

    for epoch in range(len(history) + 1, params.epochs + 1):
        if should_stop():
            save()  # a pod stopped by SIGTERM loses nothing
            raise TrainingCancelled(f"cancelled before epoch {epoch} of {params.epochs}")
        loss, val_loss = run_epoch(rng.permutation(len(data.x_train)).astype(np.int32))
        report = EpochReport(
            epoch, params.epochs, float(loss), float(val_loss) if data.has_validation else None
        )
        losses = [report.loss] if report.val_loss is None else [report.loss, report.val_loss]
        if not all(math.isfinite(value) for value in losses):
            raise TrainingDiverged(
                f"the loss became {report.loss} at epoch {epoch}: lower learning_rate or mid_range"
            )
        history.append(report)
        on_epoch(report)
        if stopper is not None:
            stopper.on_epoch_end(epoch - 1, {"val_loss": report.val_loss})
            if model.stop_training:
                break
        if checkpoint is not None and checkpoint.due():
            save()
    best_epoch = None
    if stopper is not None:
        stopper.on_train_end()  # restores the best weights, as Keras does
        best_epoch = int(stopper.best_epoch) + 1
    return FitResult(
        history,
        seconds=time.perf_counter() - started,
        cpu_seconds=time.process_time() - cpu_started,
        best_epoch=best_epoch,
        gradient_steps=int(optimizer.iterations.numpy()),
    )


def _restore(
    state: TrainingState, model: Any, optimizer: Any, rng: np.random.Generator, stopper: Any
) -> list[EpochReport]:
    """Put a checkpoint's state back; the epochs it holds."""
    model.set_weights(state.weights)
    for variable, value in zip(optimizer.variables, state.optimizer, strict=True):
        variable.assign(value)
    rng.bit_generator.state = state.order
    if stopper is not None and state.stopper is not None:
        for name in _STOPPER:
            setattr(stopper, name, state.stopper[name])
        stopper.best_weights = state.best_weights
    return list(state.history)


def _compile_epoch(model: Any, optimizer: Any, data: TrainingData, batch_size: int) -> EpochProgram:
    """One epoch as a single XLA program taking the epoch's row order."""
    x_train, y_train = tf.constant(data.x_train), tf.constant(data.y_train)
    x_val, y_val = tf.constant(data.x_val), tf.constant(data.y_val)
    variables = model.trainable_variables

    def mse(prediction: Any, truth: Any) -> Any:
        return tf.reduce_mean(tf.math.squared_difference(prediction, truth))

    def train_step(x: Any, y: Any) -> Any:
        with tf.GradientTape() as tape:
            loss = mse(model(x, training=True), y)
        optimizer.apply(tape.gradient(loss, variables), variables)
        return loss

    def evaluate(x: Any, y: Any) -> Any:
        return mse(model(x), y)

    def mean_over_batches(x: Any, y: Any, rows: int, step: Callable[[Any, Any], Any]) -> Any:
        """``step``'s loss over every batch (the last partial one too), weighted by rows."""
        if not rows:
            return tf.constant(0.0)
        batches, rest = divmod(rows, batch_size)
        cut = batches * batch_size
        total = tf.constant(0.0)
        if batches:
            # batches as [batches, batch_size, 1]: indexing a pre-shaped tensor inside the
            # loop keeps XLA's loop body cheap
            x_batches = tf.reshape(x[:cut], [batches, batch_size, 1])
            y_batches = tf.reshape(y[:cut], [batches, batch_size, 1])
            for index in tf.range(batches):
                total += step(x_batches[index], y_batches[index]) * batch_size
        if rest:
            total += step(x[cut:], y[cut:]) * rest
        return total / rows

    def epoch_program(order: Any) -> tuple[Any, Any]:
        x, y = tf.gather(x_train, order), tf.gather(y_train, order)
        loss = mean_over_batches(x, y, len(data.x_train), train_step)
        # validation in batches like Keras' evaluation: the hidden activations of every
        # held-out row at once would cost rows × num_neurons floats
        return loss, mean_over_batches(x_val, y_val, len(data.x_val), evaluate)

    compiled: EpochProgram = tf.function(epoch_program, jit_compile=True)
    return compiled


def _early_stopping(model: Any, patience: int | None) -> Any:
    """Keras' own EarlyStopping on val_loss, best weights restored; None when off."""
    if patience is None:
        return None
    stopper = keras.callbacks.EarlyStopping(
        monitor="val_loss", patience=patience, restore_best_weights=True
    )
    stopper.set_model(model)
    model.stop_training = False
    stopper.on_train_begin()
    return stopper
