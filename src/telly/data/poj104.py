"""POJ-104 as CodeXGLUE ships it (Clone-detection-POJ-104): programs grouped by the problem they solve.

The folder holds `train.jsonl`, `valid.jsonl` and `test.jsonl`, one JSON object per line with
`label` (the problem id), `index` and `code` (a C or C++ program by a student). The splits hold
disjoint problems (CodeXGLUE: 64 train, 16 valid, 24 test problems, 500 programs each). The
semantic probe trains on programs of train problems and is scored on test problems, so what it
learns must carry over to problems it never saw; `read_poj104` samples the same number of
programs from every problem of a split, to fit a budget.
"""

from __future__ import annotations

import random
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from telly.data.formats import iter_jsonl
from telly.errors import UserError

POJ104_SPLITS = ("train", "test")  # the probe has no use for valid


@dataclass(frozen=True)
class Program:
    code: str
    problem: str  # the record's `label`


@dataclass
class Poj104Sample:
    train: list[Program]
    test: list[Program]
    problems: dict[str, int]  # split -> problems sampled


def read_poj104(folder: Path, programs: int, test_fraction: float, seed: int = 0) -> Poj104Sample:
    """About `programs` programs, `test_fraction` of them from test problems, the rest from train ones.

    From every problem of a split the same number of programs is drawn (at least 2, so each has
    a group to retrieve), chosen with `seed`; a problem with fewer programs gives all it has.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"--poj104: no such folder: {folder}")
    wanted_test = max(2, round(programs * test_fraction))
    budgets = {"train": programs - wanted_test, "test": wanted_test}
    sampled, problems = {}, {}
    for split in POJ104_SPLITS:
        by_problem = _programs_by_problem(folder / f"{split}.jsonl")
        per_problem = max(2, budgets[split] // len(by_problem))
        rng = random.Random(f"{seed}:{split}")
        sampled[split] = [
            program
            for problem in sorted(by_problem)
            for program in rng.sample(by_problem[problem], min(per_problem, len(by_problem[problem])))
        ]
        problems[split] = len(by_problem)
    overlap = {p.problem for p in sampled["train"]} & {p.problem for p in sampled["test"]}
    if overlap:
        raise UserError(f"{folder}: train.jsonl and test.jsonl share problems ({', '.join(sorted(overlap)[:3])}); "
                        "POJ-104's splits hold disjoint problems")
    return Poj104Sample(sampled["train"], sampled["test"], problems)


def _programs_by_problem(path: Path) -> dict[str, list[Program]]:
    by_problem: dict[str, list[Program]] = defaultdict(list)
    for line_number, record in iter_jsonl(path):
        code, label = record.get("code"), record.get("label")
        if not isinstance(code, str) or not isinstance(label, (str, int)) or isinstance(label, bool):
            raise UserError(f"{path} line {line_number}: a POJ-104 record needs \"code\" (a string) and "
                            "\"label\" (the problem id)")
        by_problem[str(label)].append(Program(code, str(label)))
    if not any(len(group) >= 2 for group in by_problem.values()):
        raise UserError(f"{path}: no problem has two programs; the semantic probe retrieves programs of one problem")
    return by_problem
