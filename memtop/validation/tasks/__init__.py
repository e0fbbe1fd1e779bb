"""One module per validation step; each runs as its own process (see memtop.validation.taskkit)."""
