"""The in-process hook. Runs inside the user's training process.

Nothing here imports textual, rich, plotext or pandas (a test proves it in a fresh interpreter);
torch is imported only by the modules that measure, and only once the user's script imported it.
"""
