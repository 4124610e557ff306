"""trainer_service: training jobs over REST (Flask under gunicorn), published to the model store.

Sliced by layer, and each behaviour lives in one place:

- ``api/``: every route and the shape of every answer, one module per resource (``jobs``,
  ``models``, ``labels``, ``traffic``, ``sweeps``, ``operations``); the OpenAPI document is
  generated from the models those routes name (flask-openapi3);
- ``runner/``: the job book on the store and the executors that run jobs (local, kubernetes);
- ``sweeps/``: the sweep controller (spec, records, search, results, plots, promotion),
  no HTTP;
- ``rollouts/``: promotion gates, label moves and the predictor's live figures, no HTTP;
- ``training/``: what one job process does (data, model, fit, export, figures);
- ``dashboard/``: the one page and its scripts; top level: settings, params, the lifecycle
  every job, sweep and trial follows, the errors, the CLI and the control loop.

``api`` may import every other package; none of them imports ``api`` (import-linter).
"""
