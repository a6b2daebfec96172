"""Event wiring shared by the tabs: named handler results -> component updates.

Handlers return ``(state, {name: value})``; ``connector(components)`` gives a
``connect(event, fn, inputs, ...)`` that declares every named component as an output
(so a handler may update any subset), turns ``InputError``/``ValueError`` into
``gr.Error`` (the message reaches the user, the app stays up), and passes
``gr.SelectData`` to click handlers (``select=True``) or a ``gr.Progress`` as the last
argument (``progress=True``).
"""

from __future__ import annotations

from typing import Any, Callable

import gradio as gr

from core.errors import InputError


class Update(dict):
    """Property changes for a component (``Update(visible=False)``, ``Update(choices=[...])``).

    A plain dict is read as property changes too, except for components whose value is
    itself a dict (``gr.ImageEditor``): there only ``Update`` means properties.
    """


def _update(name: str, value: Any, out: dict, c: dict) -> dict:
    if name == "sliders_max":
        return {
            c[f"{plane}_slider"]: gr.update(maximum=n, value=out.get(f"{plane}_slider", 0))
            for plane, n in value.items()
        }
    if isinstance(value, Update) or (isinstance(value, dict) and not isinstance(c[name], gr.ImageEditor)):
        return {c[name]: gr.update(**value)}
    return {c[name]: value}


def connector(c: dict) -> Callable:
    """``connect(event, fn, inputs, select=False, **event_kwargs)`` for components ``c``."""
    outputs = [comp for comp in c.values() if isinstance(comp, gr.components.Component | gr.blocks.BlockContext)]

    def apply(result) -> dict:
        state, out = result
        updates = {c["state"]: state}
        for name, value in out.items():
            if name.endswith("_slider") and "sliders_max" in out:
                continue  # set together with its maximum
            updates.update(_update(name, value, out, c))
        return updates

    def guarded(fn, *args):
        try:
            return apply(fn(*args))
        except (InputError, ValueError, FileNotFoundError) as exc:
            raise gr.Error(str(exc), print_exception=False) from exc

    def connect(event, fn, inputs, *, select: bool = False, progress: bool = False, **kwargs):
        if progress:  # Gradio injects gr.Progress through a keyword default of the event function
            def run_progress(*args, progress=gr.Progress()):
                return guarded(fn, *args, progress)

            return event(run_progress, inputs=inputs, outputs=outputs, **kwargs)
        if select:
            def run_select(*args, evt: gr.SelectData):
                return guarded(fn, *args, evt)

            return event(run_select, inputs=inputs, outputs=outputs, **kwargs)

        def run(*args):
            return guarded(fn, *args)

        return event(run, inputs=inputs, outputs=outputs, **kwargs)

    return connect
