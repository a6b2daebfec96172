"""The one error type that user-facing layers turn into a message.

``InputError`` is raised for anything wrong with what the user gave us (a corrupt
file, a mask of the wrong shape, an empty folder). Its message says what was wrong
and how to fix it; the CLI prints it on one line and the app shows it with
``gr.Error``. It subclasses ``ValueError`` so library callers can catch either.
"""


class InputError(ValueError):
    """Bad user input, with a message meant for the user."""
