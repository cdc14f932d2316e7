"""Task plug-ins: each is a small module implementing `telly.tasks.base.Task`."""

from __future__ import annotations

from telly.errors import UserError
from telly.tasks.base import Task
from telly.tasks.clone import CloneDetectionTask
from telly.tasks.complete import CodeCompletionTask
from telly.tasks.generate import CodeGenerationTask
from telly.tasks.search import CodeSearchTask
from telly.tasks.summarize import CodeSummarizationTask

TASKS: dict[str, type[Task]] = {
    task.name: task
    for task in (CodeSearchTask, CloneDetectionTask, CodeSummarizationTask, CodeGenerationTask, CodeCompletionTask)
}


def get_task(name: str) -> type[Task]:
    try:
        return TASKS[name]
    except KeyError:
        raise UserError(f"unknown task {name!r}; choose one of: {', '.join(TASKS)}") from None
