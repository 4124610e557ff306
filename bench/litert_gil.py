"""What one LiteRT call costs while another Python thread wants the GIL.

The predictor answers each gRPC call on a thread of grpcio's pool. Under concurrency the
other pool threads are runnable, so a native call that releases the GIL pays for getting
it back. This probe times the calls a one-value Predict makes on a trained version's
``model.tflite``: first with nothing else running, then beside a thread that only counts.
It also times LiteRT's ``CompiledModel``, which runs without releasing the GIL.

    python bench/litert_gil.py    # prints one table; about half a minute (trains a model)

Beside the busy thread every call gets at most about half the wall clock (the GIL is shared
in 5 ms turns), so about twice its time alone is the floor; a call that releases the GIL
pays more, since each release can hand the rest of a turn to the busy thread.

It is a diagnosis, not a goal: nothing here fails, and ``make bench`` does not run it. The
docs/performance.md ("Where the margins are thin") says what its figures mean for serving.
"""

from __future__ import annotations

import contextlib
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table
from serving import trained_store

SECONDS = 1.0
"""How long each call is repeated: many of Python's 5 ms switch intervals, so the busy
thread's turns are counted (a short loop can finish inside one interval)."""


def per_call_us(call: Callable[[], Any]) -> float:
    """Mean wall-clock microseconds per call, repeating ``call`` for SECONDS."""
    count, started = 0, time.perf_counter()
    deadline = started + SECONDS
    while time.perf_counter() < deadline:
        for _ in range(100):
            call()
        count += 100
    return (time.perf_counter() - started) / count * 1e6


@contextlib.contextmanager
def busy_thread() -> Iterator[None]:
    """A thread that runs Python until the block ends: it always wants the GIL."""
    stop = threading.Event()

    def spin() -> None:
        count = 0
        while not stop.is_set():
            count += 1

    thread = threading.Thread(target=spin, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def probes(model: bytes) -> dict[str, Callable[[], Any]]:
    """The calls to time: the interpreter's three steps and a CompiledModel run."""
    from ai_edge_litert.compiled_model import CompiledModel
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=model, num_threads=1)
    interpreter.allocate_tensors()
    x_index = int(interpreter.get_input_details()[0]["index"])
    y_index = int(interpreter.get_output_details()[0]["index"])
    x = np.full((1, 1), 0.5, dtype=np.float32)
    compiled = CompiledModel.from_buffer(model)
    inputs, outputs = compiled.create_input_buffers(0), compiled.create_output_buffers(0)

    def compiled_run() -> Any:
        inputs[0].write(x)
        compiled.run_by_index(0, inputs, outputs)
        return outputs[0].read(1, np.float32)

    return {
        "Interpreter.set_tensor": lambda: interpreter.set_tensor(x_index, x),
        "Interpreter.invoke": interpreter.invoke,
        "Interpreter.get_tensor": lambda: interpreter.get_tensor(y_index),
        "CompiledModel write, run, read": compiled_run,
    }


def main() -> int:
    """Train a small version, time each call alone and beside a busy thread, print both."""
    console = Console()
    with tempfile.TemporaryDirectory(prefix="squarenet-bench-gil-") as tmp:
        console.print("training a model for the store ...")
        store = trained_store(Path(tmp))
        model = next(store.rglob("model.tflite")).read_bytes()
        calls = probes(model)
        alone = {name: per_call_us(call) for name, call in calls.items()}
        with busy_thread():
            busy = {name: per_call_us(call) for name, call in calls.items()}
    table = Table(title="LiteRT calls of a one-value Predict, µs per call")
    for column in ("call", "alone", "beside a busy Python thread"):
        table.add_column(column, justify="left" if column == "call" else "right")
    for name in calls:
        table.add_row(name, f"{alone[name]:.1f}", f"{busy[name]:.1f}")
    console.print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
