"""REST API tests of the trainer (Flask test client and the real squarenet-trainer)."""
