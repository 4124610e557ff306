"""``python -m trainer_service.training.measure FOLDER OPTIONS``: a gate's SavedModel side.

The trainer measures a version published without a sealed ``gate.json`` in this child
process, so that TensorFlow is imported here and never in a gunicorn worker. It lives with
training (which owns the SavedModel loader) and calls the gate's ``measure``, so rollouts
never import training. OPTIONS is ``{"domain": [lo, hi], "num_neurons": n}``; the report is
printed as one JSON line.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from trainer_service.rollouts.gate import measure
from trainer_service.training.export import load_saved_model


def main(argv: list[str]) -> int:
    """Print the measurement of the SavedModel in ``argv[0]``."""
    folder, options = Path(argv[0]), json.loads(argv[1])
    domain = (float(options["domain"][0]), float(options["domain"][1]))
    report = measure(folder, domain, options["num_neurons"], load_saved_model(folder))
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
