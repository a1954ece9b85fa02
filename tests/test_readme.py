"""Every code block of the README runs, and so does every Python block of the documentation pages (docs/*.md), so
that no snippet rots.

Blocks run as written, with the tiny random-init model in place of SmolLM2 and small budgets where the real ones
take minutes: the SUBSTITUTIONS below. Each substitution must still match some block (a test checks it), so a
changed snippet fails here rather than silently running with its full budget. A Python block whose first line is
``# continues ...`` runs after the Python block before it, in the same namespace; a docs block whose first line is
``# not run by the tests: <reason>`` is reported as skipped with that reason (none in the README). In a ``bash`` block of the README,
the ``make`` lines must name targets of the Makefile and every ``textenv`` line runs through the CLI's ``main``; the
docs pages' ``textenv`` lines must parse.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
DOC_PAGES = sorted((REPO / "docs").glob("*.md"))
FENCE = re.compile(r"^```(\w+)\n(.*?)^```$", re.MULTILINE | re.DOTALL)

#: what the tests change in a block: the real model and full budgets -> the tiny model and budgets of seconds
SUBSTITUTIONS = {
    "smollm2-135m-instruct": "tiny-random-smollm2",
    "model.learn(30_000)": "model.learn(256)",
    "n_eval_episodes=200": "n_eval_episodes=8",
    "train(iterations=30)": "train(iterations=2)",
    "train(max_seconds=20 * 60)": "train(iterations=2)",
    "policy.model.layers[-8:]": "policy.model.layers[-1:]",
    "pairs=600": "pairs=16",
    "base_blocks=16": "base_blocks=1",
    "num_train_epochs=6": "num_train_epochs=1",
    "--steps 30000": "--steps 128",
    "--seeds 2 --budget 20000": "--seeds 1 --budget 64",
}
#: a docs block that cannot run in the default suite (it needs an extra that `make setup` does not install, a
#: server, ...) starts with this line and its reason; the README has none
NOT_RUN = "# not run by the tests"
#: blocks that are not code to run: the README's set-up commands are checked against the Makefile instead
README_SETUP = ("make demo", "make test")


def code_blocks(path: Path) -> list[tuple[str, str]]:
    """The fenced blocks of a Markdown file: (language, code)."""
    return [(m.group(1), m.group(2)) for m in FENCE.finditer(path.read_text(encoding="utf-8"))]


def shrink(code: str) -> str:
    for old, new in SUBSTITUTIONS.items():
        code = code.replace(old, new)
    return code


def python_cases() -> list[pytest.param]:
    cases = []
    for path in [README, *DOC_PAGES]:
        blocks = [code for language, code in code_blocks(path) if language == "python"]
        for index, code in enumerate(blocks):
            chain = [code]
            while chain[0].startswith("# continues") and index - len(chain) + 1 > 0:
                chain.insert(0, blocks[index - len(chain)])
            cases.append(pytest.param(chain, id=f"{path.relative_to(REPO)}:python{index}"))
    return cases


def cli_lines(path: Path = README) -> list[str]:
    """The ``textenv`` command lines of a page's bash blocks, continuation lines joined, comments dropped."""
    lines = []
    for language, code in code_blocks(path):
        if language != "bash":
            continue
        for line in code.replace("\\\n", " ").splitlines():
            command = line.split("#", 1)[0].strip()
            if command.startswith("textenv "):
                lines.append(command)
    return lines


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    return tmp_path


@pytest.mark.parametrize("chain", python_cases())
def test_python_block_runs(chain, in_tmp):
    if chain[-1].startswith(NOT_RUN):  # shown as a skip with its reason, never silently
        pytest.skip(chain[-1].splitlines()[0][len(NOT_RUN):].strip(" :"))
    namespace: dict = {"__name__": "__main__"}
    for code in chain:
        exec(compile(shrink(code), "<snippet>", "exec"), namespace)


@pytest.mark.parametrize("command", cli_lines())
def test_readme_command_line_runs(command, in_tmp, capsys):
    from agents.cli import main

    argv = shlex.split(shrink(command))
    assert main(argv[1:]) == 0, capsys.readouterr().err


@pytest.mark.parametrize(
    "command", [pytest.param(c, id=f"{p.name}:{c[:60]}") for p in DOC_PAGES for c in cli_lines(p)]
)
def test_docs_command_line_parses(command):
    """The docs pages' ``textenv`` lines are not run (some take minutes), but each must parse: every flag exists."""
    from agents.cli import build_parser

    try:
        build_parser().parse_args(shlex.split(command)[1:])
    except SystemExit as exit_:
        pytest.fail(f"{command!r} does not parse (exit {exit_.code})")


def test_readme_setup_commands_are_makefile_targets():
    setup = next(code for language, code in code_blocks(README) if language == "bash")
    makefile = (REPO / "Makefile").read_text()
    for command in README_SETUP:
        assert command in setup.splitlines()[0] + setup.splitlines()[1]
        assert re.search(rf"^{command.split()[1]}:", makefile, re.MULTILINE), command


def test_every_block_is_checked_and_every_substitution_matches():
    """No block of an unknown language slips through, every README block runs, and no substitution has gone
    stale."""
    everything = ""
    for path in [README, *DOC_PAGES]:
        for language, code in code_blocks(path):
            assert language in {"python", "bash", "toml", "text", "yaml"}, f"{path.name}: a {language!r} block"
            assert not (path == README and code.startswith(NOT_RUN)), "every README block must run"
            everything += code
    stale = [old for old in SUBSTITUTIONS if old not in everything]
    assert not stale, f"substitutions that match no block any more: {stale}"
    assert len(cli_lines()) >= 3


def test_readme_is_short():
    assert len(README.read_text(encoding="utf-8").splitlines()) <= 250


@pytest.mark.parametrize(
    "target",
    [t for t in re.findall(r"\]\(([^)\s]+)\)", README.read_text(encoding="utf-8")) if not re.match(r"^[a-z]+:", t)],
)
def test_readme_link_resolves(target):
    if target.startswith("experiments/") and not any((REPO / "experiments").glob("*/REPORT.md")):
        pytest.skip("no study report in experiments/ yet: the studies are checked once they are in the tree")
    assert (REPO / target.split("#")[0]).exists(), f"README links to a missing file: {target}"
