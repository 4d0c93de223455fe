"""Small helpers shared by the Django apps (not by the pure engine)."""
