"""Runtime fuzz layer: strategies, frame mutators, live-server invariants, reproducers, the time-boxed engine.

Generated stacks (`<stack>/strategies.py`, `<stack>/tests/`) call into this package; `ttgen fuzz` runs the
same
suites with a time budget. Nothing here imports `codegen` or `ttgen`.
"""
