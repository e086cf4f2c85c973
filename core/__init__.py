"""DocETL Workbench core: every rule, all SQL and all files. Never imports streamlit."""
from __future__ import annotations

from typing import Any

__all__ = ["Workbench"]


def __getattr__(name: str) -> Any:
    # lazy, so `python -m core` and light imports stay fast
    if name == "Workbench":
        from core.workbench import Workbench

        return Workbench
    raise AttributeError(name)
