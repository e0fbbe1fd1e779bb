"""The run directory (format v1): creating, finding and reading runs.

Shared by the in-process hook, the CLI, the analyzers and the dashboard. Imports nothing heavy
(no torch, no UI) so that every part may use it.
"""
