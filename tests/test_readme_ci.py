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


def test_configs_referenced_in_readme_exist():
    text = (ROOT / "README.md").read_text()
    for name in re.findall(r"configs/([\w-]+\.yaml)", text):
        assert (ROOT / "configs" / name).is_file(), name
