"""The client's train flags follow the trainer's TrainingParams: same fields, same defaults."""

from __future__ import annotations

import re

from squarenet.cli.hyperparameters import HYPERPARAMETERS
from trainer_service.params import TrainingParams

_SHOWN_AS = {None: ("random", "off")}


def test_every_training_field_has_a_flag() -> None:
    assert [h.name for h in HYPERPARAMETERS] == list(TrainingParams.model_fields)


def test_the_defaults_shown_in_help_are_the_trainers() -> None:
    for hyperparameter in HYPERPARAMETERS:
        shown = re.search(r"\(([^()]*)\)$", hyperparameter.help)
        assert shown, f"{hyperparameter.flag} help does not show its default"
        default = TrainingParams.model_fields[hyperparameter.name].default
        if default is None:
            assert shown.group(1) in _SHOWN_AS[None], hyperparameter.flag
        else:
            assert hyperparameter.parse(shown.group(1)) == default, hyperparameter.flag
