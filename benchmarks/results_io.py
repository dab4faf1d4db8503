"""Writing a reproduction's record: the numbers, and how they were obtained."""

from __future__ import annotations

import json
import platform
import shlex
import sys
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"


def provenance(started: float, extra: dict | None = None) -> dict:
    """The exact command, software versions, machine and wall time of this run."""
    import minivae
    from threadpoolctl import threadpool_info
    blas = [f"{i['internal_api']} {i.get('version')}" for i in threadpool_info() if i["user_api"] == "blas"]
    return {"command": "python " + " ".join(shlex.quote(a) for a in sys.argv),
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "wall_time_s": round(time.time() - started, 1),
            "python": platform.python_version(), "numpy": np.__version__, "minivae": minivae.__version__,
            "blas": ", ".join(blas), "machine": f"{platform.machine()}, {__import__('os').cpu_count()} CPUs",
            **(extra or {})}


def write_record(stem: str, markdown: str, record: dict) -> list[Path]:
    RESULTS.mkdir(parents=True, exist_ok=True)
    md, js = RESULTS / f"{stem}.md", RESULTS / f"{stem}.json"
    md.write_text(markdown)
    js.write_text(json.dumps(record, indent=1, default=float))
    return [md, js]


def provenance_table(p: dict) -> str:
    rows = "\n".join(f"| {k.replace('_', ' ')} | `{v}` |" for k, v in p.items())
    return f"| | |\n|---|---|\n{rows}\n"
