"""Data builds in worker processes (`--jobs`) write the same files, to the byte, as in one process."""

import os
import shutil
import sysconfig
import zipfile
from pathlib import Path

import pytest

from telly.cli import main
from telly.data import BUILDERS
from telly.data.corpus import FILES_PER_CHUNK, build_code_search
from telly.data.parallel import ordered_map

STDLIB = Path(sysconfig.get_paths()["stdlib"])


def files_of(folder: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(folder.iterdir())}


@pytest.fixture(scope="module")
def python_sources(tmp_path_factory):
    """Two real standard library packages (34 files), copied."""
    folder = tmp_path_factory.mktemp("python-sources")
    for package in ("json", "email"):
        shutil.copytree(STDLIB / package, folder / package, ignore=shutil.ignore_patterns("__pycache__"))
    return folder


@pytest.fixture
def sources(request, python_sources, java_sources, ruby_sources):
    """`(the sources, their language)` of the language named by the test's parameter."""
    return {"python": python_sources, "java": java_sources, "ruby": ruby_sources}[request.param], request.param


def process_of(item):
    return item, os.getpid()


def test_ordered_map_keeps_the_order_and_uses_worker_processes():
    results = list(ordered_map(process_of, list(range(40)), jobs=2, chunk_size=3))
    assert [item for item, _ in results] == list(range(40))
    assert os.getpid() not in {process for _, process in results}
    assert list(ordered_map(process_of, [1, 2], jobs=2, chunk_size=3)) == [(1, os.getpid()), (2, os.getpid())]


@pytest.mark.parametrize("sources", ["python", "java", "ruby"], indirect=True)
@pytest.mark.parametrize("task", sorted(set(BUILDERS) - {"code-summarization"}))  # the builder of code-search
def test_every_task_and_language_builds_the_same_files_in_two_processes(task, sources, tmp_path):
    folder, language = sources
    assert len(list(folder.rglob("*.*"))) > 2 * FILES_PER_CHUNK  # so that both workers read files
    one, two = tmp_path / "one", tmp_path / "two"
    summary_one = BUILDERS[task]([folder], one, language=language, jobs=1)
    summary_two = BUILDERS[task]([folder], two, language=language, jobs=2)
    assert files_of(two) == files_of(one)
    assert str(summary_two) == str(summary_one)


def test_files_skipped_in_a_worker_are_counted_as_in_one_process(python_sources, tmp_path):
    source = tmp_path / "src"
    shutil.copytree(python_sources, source)
    (source / "email" / "broken.py").write_text('def f(:\n    """Does not parse at all."""\n')
    (source / "json" / "latin1.py").write_bytes('def f():\n    """Caf\xe9 au lait."""\n'.encode("latin-1"))
    (source / "json" / "nul.py").write_bytes(b'def f():\n    """Has a NUL byte."""\n    return "\0"\n')
    (source / "email" / "mime" / "gone.py").symlink_to(tmp_path / "absent.py")
    (source / "zz_table.py").write_text('def big():\n    """A generated table."""\n    return 1\n' + "#" * 2**20)
    skipped = {"larger than 1 MB": 1, "not UTF-8": 1, "unparsable": 1, "unreadable": 1, "with NUL bytes": 1}
    for jobs in (1, 2):
        summary = build_code_search([source], tmp_path / f"jobs{jobs}", max_file_mb=1, jobs=jobs)
        assert summary.skipped == skipped
    assert files_of(tmp_path / "jobs2") == files_of(tmp_path / "jobs1")


def test_an_archive_is_read_by_worker_processes_as_by_one(java_sources, tmp_path):
    archive = tmp_path / "src.zip"
    with zipfile.ZipFile(archive, "w") as zipped:
        for path in sorted(java_sources.iterdir()):
            zipped.write(path, f"java.base/demo/{path.name}")
    for jobs in ("1", "2"):
        assert main(["data", "build", str(archive), "--task", "code-completion", "--jobs", jobs,
                     "--out", str(tmp_path / jobs)]) == 0
    assert files_of(tmp_path / "2") == files_of(tmp_path / "1")
