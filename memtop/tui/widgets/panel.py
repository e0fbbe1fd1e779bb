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


def set_border(widget: Widget, title: str | None = None, subtitle: str | None = None) -> None:
    """Set border title/subtitle only when they change (setting one always repaints the widget)."""
    if title is not None and widget.border_title != title:
        widget.border_title = title
    if subtitle is not None and widget.border_subtitle != subtitle:
        widget.border_subtitle = subtitle


class TextPanel(Widget):
    """Subclasses implement :meth:`build`; everything else (height, width tracking) is here."""

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self._width = 40
        self._shown: tuple[int, str, int] | None = None
        self._cache: tuple[int, Text] | None = None

    def changed(self) -> None:
        """The data changed: repaint if the text did, and re-layout only if its height did.

        A dashboard updates twice a second; a layout pass (and the repaint of every widget it
        moves) for text that did not change, or changed in place, is most of what it would cost.
        """
        self._cache = None
        text = self._text(max(1, self._width))
        key = (hash((text.plain, tuple(text.spans))), text.plain, text.plain.count("\n"))
        if self._shown is not None and key[:2] == self._shown[:2]:
            return
        layout = self._shown is None or key[2] != self._shown[2]
        self._shown = key
        self.refresh(layout=layout)

    def build(self, width: int) -> Text:
        raise NotImplementedError

    def on_resize(self, event: events.Resize) -> None:
        width = event.size.width - self.styles.gutter.width  # the event has the outer size
        if width > 0 and width != self._width:
            self._width = width
            self._shown = None
            self.refresh(layout=True)

    def _text(self, width: int) -> Text:
        """The text for ``width``, built once per change (layout, render and diff all ask for it)."""
        if self._cache is None or self._cache[0] != width:
            self._cache = (width, self.build(width))
        return self._cache[1]

    def get_content_height(self, container: Size, viewport: Size, width: int) -> int:
        if width <= 0:
            return 0
        self._width = width
        return len(self._text(width).wrap(self.app.console, width))

    def render(self) -> Text:
        return self._text(max(1, self._width))
