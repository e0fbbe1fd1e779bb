"""The run directory (format v1): creating, finding and reading runs.

``records`` is the typed model (every key spelled once), ``decode`` the one lenient decode step
of rank-file lines and ``meta_decode`` that of meta.json (both with the value checks of
``checks``), ``safeio`` the only way files of a run are opened, ``reader`` whole runs and the rank-file
follower, ``rundir`` run directories and meta.json, ``format`` file and tag names.

Shared by the in-process hook, the CLI, the analyzers and the dashboard. Imports nothing heavy
(no torch, no UI) so that every part may use it.
"""
