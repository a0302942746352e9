"""The README's first lines are the commands a new user runs; CI must run the same test command."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    block = re.search(r"```bash\n(.*?)```", text, re.S)
    assert block, "README must open with a bash code block"
    assert text.index("```bash") < 40, "the commands must be in the README's first lines"
    return [line for line in block.group(1).splitlines() if line.strip()]


def test_readme_opens_with_two_commands():
    commands = _readme_commands()
    assert len(commands) == 2
    assert "pip install" in commands[0] and "pip install" in commands[1]
    assert "pytest" in commands[1]


def test_ci_runs_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text()
    assert _readme_commands()[1] in ci.splitlines()


def _ci_after_readme_command(command: str) -> str:
    """.ci/run's lines from the README's test command to its status check, that command replaced."""
    lines = (ROOT / ".ci" / "run").read_text().splitlines()
    start = lines.index(_readme_commands()[1])
    end = next(i for i in range(start, len(lines)) if lines[i].startswith("if [") and "readme_status" in lines[i])
    return "\n".join(["set -euo pipefail", command, *lines[start + 1 : end + 1], "echo reached"]) + "\n"


def test_ci_fails_when_the_readme_install_fails():
    """Under set -e a failed `pip install` inside the README's && list skips pytest without stopping
    the script; CI must stop there with that status (it once ran on and passed after a full disk)."""
    import subprocess

    failed = subprocess.run(["bash", "-c", _ci_after_readme_command("false && true")], capture_output=True, text=True)
    assert failed.returncode != 0 and "reached" not in failed.stdout
    assert "README's test command failed" in failed.stderr
    passed = subprocess.run(["bash", "-c", _ci_after_readme_command("true && true")], capture_output=True, text=True)
    assert passed.returncode == 0 and "reached" in passed.stdout


def test_configs_referenced_in_readme_exist():
    text = (ROOT / "README.md").read_text()
    for name in re.findall(r"configs/([\w-]+\.yaml)", text):
        assert (ROOT / "configs" / name).is_file(), name
