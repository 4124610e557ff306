"""trainer_service: training jobs over REST (Flask under gunicorn), published to the model store."""
