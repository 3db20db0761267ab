"""replog test suite; `python -m tests` runs lint, types and pytest."""
