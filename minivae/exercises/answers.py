"""Reading what came back from an answer: an exception, an ending, a write into an input.

Everything here takes plain data (``wire``) and returns words for the report; nothing runs the
learner's code. A message says what the answer did and how far off it is, never the target value.
"""

from __future__ import annotations

import re

import numpy as np

from .outcome import DEFAULT_MEMORY_MB, Outcome, Raised, Reply
from .wire import Odd

_ASSIGNED = re.compile(r"^\s*d(\w+)\b[^=]*?[+\-*/]?=(?!=)")

ENDINGS = {
    "SystemExit": "ended the process (sys.exit, exit() or unittest.main) before returning: an answer "
                  "must return its result, so remove the exit",
    "KeyboardInterrupt": "raised KeyboardInterrupt (a Ctrl-C, or raised by the code itself) before returning",
    "MemoryError": f"ran out of memory (the grader allows {DEFAULT_MEMORY_MB} MB unless told otherwise): "
                   f"an array far larger than the inputs?",
    "RecursionError": "recursed without end (RecursionError): a function that calls itself with no base case?",
}


def raised_words(r: Raised, file: str, hints: dict | None = None, n_args: int = 0) -> str:
    """``raised ValueError: ... (line 7 of linear.py)``, with the hint of the gradient that line computes."""
    if r.signature:
        return (f"could not be called with {n_args} argument(s): {r.message}. It is defined as "
                f"{r.signature} of {file}; keep the signature the exercise gives.")
    where = f" (line {r.line} of {file})" if r.line else ""
    if r.type in ENDINGS:
        return ENDINGS[r.type] + where
    words = f"raised {r.type}: {r.message}{where}"
    match = _ASSIGNED.match(r.code or "")
    if hints and match and match.group(1) in hints:
        words += f" Hint for d{match.group(1)}: {hints[match.group(1)]}"
    return words


def reply_problem(reply: Reply, file: str, hints: dict | None = None, n_args: int = 0) -> str:
    """What kept a reply from being an answer ("" when it holds a value)."""
    return raised_words(reply.raised, file, hints, n_args) if reply.raised is not None else ""


def outcome_problem(outcome: Outcome, file: str, n_calls: int) -> str:
    """Why a file gave no answers at all ("" when every call has a reply)."""
    if outcome.imported is not None:
        r = outcome.imported
        if r.type in ("SystemExit", "KeyboardInterrupt"):
            return (f"{file} ended the process while it was imported ({r.type}, line {r.line}): code at the "
                    f"top level of the file (exit(), sys.exit, unittest.main, argparse) runs when it is "
                    f"graded; put it under `if __name__ == \"__main__\":`")
        return f"{file} does not import: {r.type}: {r.message}" + (f" (line {r.line})" if r.line else "")
    if outcome.missing:
        return f"{file} has no function {', '.join(m + '()' for m in outcome.missing)}"
    if outcome.ended:
        return f"the answer {outcome.ended}"
    if len(outcome.replies) != n_calls:
        return "the answer's process replied to fewer calls than it was given"
    return ""


def kind_words(value) -> str:
    """What a non-array answer is, in words: "is None: ...", "is a list, not an array", ..."""
    if value is None:
        return "is None: write the code between START OF YOUR CODE and END OF YOUR CODE."
    if isinstance(value, Odd):
        if value.what == "complex values":
            return "returned complex values: every quantity here is real (a complex dtype, or 1j somewhere?)"
        if value.what == "an object array":
            return "returned an object array (dtype=object): build it from numbers, with NumPy operations"
        return f"is {value.what}, not an array."
    if isinstance(value, (list, tuple)):
        return f"is a {type(value).__name__}, not an array: build it with NumPy operations."
    return f"is a {type(value).__name__}, not an array."


def changed_in_place(names, originals, after) -> list[str]:
    """The names of the arguments (or their parts) the answer wrote into."""
    return [n for n, a, b in zip(names, originals, after if isinstance(after, (tuple, list)) else ())
            if not same(a, b)]


def same(a, b) -> bool:
    if isinstance(a, np.ndarray):
        return isinstance(b, np.ndarray) and a.shape == b.shape and np.array_equal(a, b, equal_nan=True)
    if isinstance(a, (tuple, list)):
        return isinstance(b, (tuple, list)) and len(a) == len(b) and all(map(same, a, b))
    return True


def printed_note(printed: str) -> str:
    """The start of what the answer printed, each line marked as the answer's."""
    if not printed.strip():
        return ""
    lines = printed.rstrip("\n").split("\n")
    shown = [f"| {line[:160]}" for line in lines[:12]]
    more = "\n| ..." if len(lines) > 12 or len(printed) >= 2000 else ""
    return "your code printed:\n" + "\n".join(shown) + more
