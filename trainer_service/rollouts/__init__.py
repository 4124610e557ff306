"""Rollouts on the trainer's side: promotion gates, the traffic document and the history."""
