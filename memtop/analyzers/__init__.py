"""Pure functions over run records (no UI imports): the post-mortem and the advisor."""
