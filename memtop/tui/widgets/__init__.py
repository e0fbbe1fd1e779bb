"""Dashboard widgets; each shows one part of a :class:`~memtop.tui.snapshot.RunSnapshot`."""
