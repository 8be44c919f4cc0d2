"""The README's test command is the contract that CI runs."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    commands = [line for line in ci.splitlines() if line.startswith("pip install -r requirements.txt")]
    assert len(commands) == 1, "CI must run exactly one install-and-test command"
    command = commands[0].split(" || status=")[0]  # CI appends only the capture of the exit status
    assert command in readme, f"CI command not found verbatim in README: {command}"
