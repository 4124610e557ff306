"""Hostile input, abuse and security checks against the real services."""
