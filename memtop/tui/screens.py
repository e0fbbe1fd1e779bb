"""Modal screens: the quit confirmation (a training run is expensive to lose) and the help.

Both close through :meth:`_OnceModal.close`: keys that arrive before the screen is gone (``?``
then two quick keys) must not dismiss it twice, which popped the dashboard itself
(``ScreenStackError``) and ended the training with it.
"""

from __future__ import annotations

from typing import Generic, TypeVar

from textual import events
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, Static

HELP_TEXT = """\
[b]memtop[/b] — where did the memory go, and what to change

[b]Panels[/b]
  [b]Device[/b]        the card's memory (NVML): allocated by PyTorch, reserved by its caching
                allocator but free, the rest of the process (CUDA context, NCCL); [b]┃[/b] = step peak
  [b]At peak[/b]       the step's peak split into parameters, gradients, optimizer state,
                activations and other (inputs, temporaries, workspaces)
  [b]Timeline[/b]      allocated / reserved / peak per step (long runs: max over buckets)
  [b]Fragmentation[/b] reserved − allocated, as % of reserved, and its trend
  [b]Large tensors[/b] the largest tensors at the last step (or at the OOM)
  [b]Suggestions[/b]   what to change, with the measured saving and the exact flag
  [b]Ranks[/b]         one row per rank (several ranks); click a row to inspect that rank

[b]Keys[/b]
  [b]q[/b]  quit (asks first while the run is going; ending memtop ends the run)
  [b]p[/b]  pause / resume the display (the run is not paused; data keeps being read)
  [b]l[/b]  show / hide the child's output
  [b]?[/b]  this help        [b]ctrl+c[/b]  end the run and quit at once

On CPU runs the allocator figures (allocated, reserved, peak, other, fragmentation) cannot be
measured and say [i]n/a[/i]; the process's resident memory and the tracked tensors are shown.
[dim]Press any key to close.[/dim]"""


T = TypeVar("T")


class _OnceModal(ModalScreen[T], Generic[T]):
    """A modal screen that is dismissed once, whatever number of keys or clicks ask for it."""

    _once_closed = False

    def close(self, result: T | None = None) -> None:
        if self._once_closed or not self.is_attached or self.app.screen is not self:
            return
        self._once_closed = True
        self.dismiss(result)


class HelpScreen(_OnceModal[None]):
    BINDINGS = [Binding("escape,question_mark,q", "close", "Close", show=False)]

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="help-box"):
            yield Static(HELP_TEXT, id="help-text")

    def on_key(self, event: events.Key) -> None:
        event.stop()
        self.close()

    def on_click(self) -> None:
        self.close()

    def action_close(self) -> None:
        self.close()


class ConfirmQuit(_OnceModal[bool]):
    """Asks before ending a live run. Result: True = end the run and quit."""

    BINDINGS = [
        Binding("y", "confirm", "End run", show=False),
        Binding("n,escape,q", "cancel", "Keep watching", show=False),
    ]

    def __init__(self, pid: int | None) -> None:
        super().__init__()
        self._pid = pid

    def compose(self) -> ComposeResult:
        who = f" (pid {self._pid})" if self._pid else ""
        with Vertical(id="confirm-box"):
            yield Static(f"[b]The training run{who} is still going.[/b]", id="confirm-title")
            yield Static("Quitting memtop ends it: its whole process group gets SIGTERM.", id="confirm-text")
            with Horizontal(id="confirm-buttons"):
                yield Button("End run and quit [y]", variant="error", id="confirm-yes")
                yield Button("Keep watching [n]", variant="primary", id="confirm-no")

    def on_mount(self) -> None:
        self.query_one("#confirm-no", Button).focus()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.close(event.button.id == "confirm-yes")

    def action_confirm(self) -> None:
        self.close(True)

    def action_cancel(self) -> None:
        self.close(False)
