"""The fixtures live in tests/support.py, so test modules can also import its helpers."""

pytest_plugins = ["tests.support", "tests.receivers"]
