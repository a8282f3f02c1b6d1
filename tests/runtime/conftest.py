"""Runtime tests use the launchers of tests/conftest.py (fixture ``jobs``)."""
