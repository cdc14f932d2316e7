"""Task plug-ins: each is a small module implementing `telly.tasks.base.Task`."""

from __future__ import annotations

from telly.errors import UserError
from telly.tasks.base import Task
from telly.tasks.search import CodeSearchTask

TASKS: dict[str, type[Task]] = {task.name: task for task in (CodeSearchTask,)}


def get_task(name: str) -> type[Task]:
    try:
        return TASKS[name]
    except KeyError:
        raise UserError(f"unknown task {name!r}; choose one of: {', '.join(TASKS)}") from None
