"""pytest set-up shared by tests/ and notebooks/: one database for the whole run.

The plugin :mod:`pgqueue_lab.tools.pytest_plugin` (the same one ``pgqueue-lab check`` uses) does the
work: if ``PGQUEUE_LAB_DSN`` is unset, the embedded server is started once, in the pytest
process, and its DSN is exported, so nbval's kernels (which nbval kills with SIGKILL) and any
subprocess connect to it without attaching to the server themselves.
"""

pytest_plugins = ["pgqueue_lab.tools.pytest_plugin"]
