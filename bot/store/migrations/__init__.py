"""Alembic migrations for the store; a package so setuptools ships env.py and the versions."""
