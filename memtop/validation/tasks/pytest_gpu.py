"""``pytest -m gpu`` on the test modules that have GPU tests. On a GPU machine a skipped GPU test is
a failure too (CUDA was not visible to it). Plugin autoload is off, so that no installed plugin (e.g.
pytest-textual-snapshot without textual) can break collection."""

from __future__ import annotations

import os
import sys
import xml.etree.ElementTree as ET

from memtop.validation.plan import gpu_test_files
from memtop.validation.taskkit import Result, md_table, run_logged, task_args


def main() -> None:
    args = task_args(__doc__ or "")
    res = Result()
    junit = args.step_dir / "junit.xml"
    env = dict(os.environ, PYTEST_DISABLE_PLUGIN_AUTOLOAD="1")
    files = gpu_test_files()
    proc = run_logged([sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-rA", "-p", "no:cacheprovider", "--continue-on-collection-errors",
                       f"--junitxml={junit}", *files], args.step_dir / "pytest.log", 90 if args.quick else 140, env)
    rows: list[list[str]] = []
    counts = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    try:
        root = ET.parse(junit).getroot()
        for suite in root.iter("testsuite"):
            for key in counts:
                counts[key] += int(suite.get(key, "0"))
        for case in root.iter("testcase"):
            verdict = "passed"
            for child in case:
                if child.tag in ("failure", "error", "skipped"):
                    verdict = f"{child.tag}: {(child.get('message') or '')[:120]}"
            rows.append([f"{case.get('classname')}::{case.get('name')}", verdict, f"{float(case.get('time', '0')):.1f}"])
    except (OSError, ET.ParseError) as exc:
        res.fail(f"no junit report ({exc}); see pytest.log")
    res.note(f"Modules: {', '.join(files)}; log: [pytest.log](pytest-gpu/pytest.log).\n")
    res.note(md_table(["test", "result", "seconds"], rows))
    passed = counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"]
    if proc.timed_out:
        res.fail("pytest did not finish in time")
    if counts["failures"] or counts["errors"] or proc.rc not in (0, None):
        res.fail(f"{counts['failures']} failed, {counts['errors']} errors (exit {proc.rc})")
    if counts["skipped"]:
        res.fail(f"{counts['skipped']} GPU tests skipped on a GPU machine")
    if counts["tests"] == 0:
        res.fail("no GPU test ran")
    res.headline = f"{passed} passed, {counts['failures']} failed, {counts['errors']} errors, {counts['skipped']} skipped"
    res.figures = counts
    res.write(args.step_dir)


if __name__ == "__main__":
    main()
