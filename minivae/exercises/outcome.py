"""What running an answer gives back, as plain data: each call's ``Reply`` (a value or what it
``Raised``), or the ``Outcome`` of a file that never replied. The sandbox makes them; the judges
(answers.py, backward.py, derivations.py) read them, and neither side needs the other's code."""

from __future__ import annotations

from dataclasses import dataclass, field

DEFAULT_MEMORY_MB = 2048  # what an answer's process may use, unless the teacher says otherwise


@dataclass
class Raised:
    """An exception the answer raised: its type, message, and where in the learner's file."""
    type: str
    message: str
    line: int = 0
    code: str = ""
    signature: str = ""   # set when the call never entered the function (a wrong signature)


@dataclass
class Reply:
    """One call's result: its value (plain data) or the exception, the arguments as the call left
    them, and the library implementations it called."""
    value: object = None
    raised: Raised | None = None
    after: object = None
    used: tuple = ()


@dataclass
class Outcome:
    """What came back for a file: replies, or why there are none (``ended``, ``imported``, ``missing``)."""
    replies: list = field(default_factory=list)
    imported: Raised | None = None   # the file raised while it was imported
    missing: tuple = ()              # function names the file does not define
    ended: str = ""                  # how the process ended without a reply
    printed: str = ""                # the start of what the answer printed
