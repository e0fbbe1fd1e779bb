"""Capacity planning (`memtop fit`): probe runs at several values of a scaling flag, curves fitted
to their peaks, and the largest value that fits a given amount of memory.

Pure measurement and arithmetic: nothing here imports UI code (rendering is memtop.render.fit).
"""
