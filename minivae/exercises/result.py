"""What the grader reports: one row per checked quantity, and a verdict."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class GradeRow:
    """One checked quantity (a gradient, a value): its error measure and what was wrong."""
    name: str
    error: float | None
    passed: bool
    message: str = ""
    label: str = "rel error"


@dataclass
class GradeResult:
    """An exercise's grade. ``problem`` is a failure before anything could be compared."""
    exercise: str
    rows: list
    problem: str = ""
    source: str = ""    # the file that was graded, when one was
    notes: str = ""     # what the grader measured beside the verdict
    printed: bool = False  # check() printed the report already
    flags: list = field(default_factory=list)  # for a teacher: e.g. the library implementations it called

    @property
    def passed(self) -> bool:
        return not self.problem and bool(self.rows) and all(r.passed for r in self.rows)

    def __str__(self) -> str:
        lines = [f"exercise {self.exercise}" + (f" ({self.source})" if self.source else "") + ":"]
        if self.problem:
            lines.append(f"  FAIL  {self.problem}")
        width = max([17] + [len(r.name) + 1 for r in self.rows])
        for r in self.rows:
            err = "      -   " if r.error is None else f"{r.error:10.2e}"
            lines.append(f"  {'pass' if r.passed else 'FAIL'}  {r.name:<{width}}{r.label} {err}"
                         + (f"\n        {r.message}" if r.message else ""))
        if self.notes:
            lines.append("  " + self.notes.replace("\n", "\n  "))
        lines.append(f"  => {'passed' if self.passed else 'not yet'}")
        return "\n".join(lines)

    def _repr_pretty_(self, printer, cycle):
        # after check() printed the whole report, a notebook cell ending with it shows only the
        # verdict; a result nobody printed (check_chain's) shows its rows
        printer.text(f"<{self.exercise}: {'passed' if self.passed else 'not yet'}>" if self.printed else str(self))
