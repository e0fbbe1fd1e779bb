"""The Textual dashboard. Reads runs only through :mod:`memtop.tui.reader` (never the hook)."""
