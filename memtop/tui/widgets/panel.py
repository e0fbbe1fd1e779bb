"""A widget whose text is laid out for a known width, without asking the compositor during layout.

Reading ``self.size`` inside ``render()`` of an auto-height widget makes Textual look the widget
up while it is still computing the layout (tens of milliseconds per frame, measured). These panels
build their text for an explicit width instead: the width Textual passes when it asks for the
height, and the width of the last resize when it renders.
"""

from __future__ import annotations

from rich.text import Text
from textual import events
from textual.geometry import Size
from textual.widget import Widget


class TextPanel(Widget):
    """Subclasses implement :meth:`build`; everything else (height, width tracking) is here."""

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self._width = 40

    def build(self, width: int) -> Text:
        raise NotImplementedError

    def on_resize(self, event: events.Resize) -> None:
        width = event.size.width - self.styles.gutter.width  # the event has the outer size
        if width > 0 and width != self._width:
            self._width = width
            self.refresh(layout=True)

    def get_content_height(self, container: Size, viewport: Size, width: int) -> int:
        if width <= 0:
            return 0
        self._width = width
        return len(self.build(width).wrap(self.app.console, width))

    def render(self) -> Text:
        return self.build(max(1, self._width))
