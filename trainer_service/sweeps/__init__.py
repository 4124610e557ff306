"""Sweeps: many training jobs from one Katib-style spec, compared in one table and three plots.

``spec`` (the request and the trials it plans), ``records`` (the store), ``controller``
(``reconcile_sweeps``, the one idempotent pass the API and the job runner call), ``search``,
``results`` (read only: the trials as their jobs are now, the best one, the CSV), ``plots``
and ``promote``. No HTTP here: the routes are ``trainer_service.api.sweeps``.
"""

from __future__ import annotations

from trainer_service.sweeps.controller import reconcile_sweeps

__all__ = ["reconcile_sweeps"]
