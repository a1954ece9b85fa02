"""Studies: one folder per study, each with its scripts and a ``REPORT.md`` (the current table, the exact command,
the machine, the seeds and the conclusion). Run a study's script from the repository root as
``python -m experiments.<study>.<script>``. Nothing in ``textenv``, ``rewards`` or ``agents`` imports this package.

Importing it sets the environment every study runs in, before any study imports transformers (a variable already
set wins): nothing is fetched from a model hub, the tokenizers' own threads stay off, transformers logs errors only.
"""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
