"""Renderers: analyzer results to text for people (with plotext plots) or JSON for scripts."""
