"""Sweeps: many tasks under one engine; reports (tables, plots, page) of what they produce."""
