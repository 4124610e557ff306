"""The trainer's REST API: every route and the shape of every answer (``app.create_app``)."""
