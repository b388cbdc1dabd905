"""CLI compat layer: cross-version interop runs (old client vs new server and new client vs old server).

`run_compat(old_spec, new_spec)` generates both stacks side by side, loads each into its own descriptor pool,
and probes every command over real frames on 127.0.0.1; `ttgen compat` is its command-line face.
"""

from ttgen.compat.report import NEW_CLIENT, OLD_CLIENT, CompatReport, Exchange
from ttgen.compat.runner import run_compat, run_compat_async, run_stacks
from ttgen.compat.stacks import VersionStack, build_stack

__all__ = [
    "NEW_CLIENT",
    "OLD_CLIENT",
    "CompatReport",
    "Exchange",
    "VersionStack",
    "build_stack",
    "run_compat",
    "run_compat_async",
    "run_stacks",
]
