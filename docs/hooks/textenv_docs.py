"""MkDocs hook: the parts of the site that are generated from the code at build time, so they cannot drift from it.

Markers a page writes on a line of its own:

* ``<!-- config-fields: agents.lm.config.GRPOConfig -->`` -- a table of the dataclass's fields: name, type, default
  and the ``field(metadata={"help": ...})`` text. ``... GRPOConfig since agents.lm.config.LMAgentConfig`` lists only
  the fields the class adds or redefines on top of that base.
* ``<!-- cli-reference -->`` -- every ``textenv`` sub-command from :func:`agents.cli.build_parser`: its description,
  usage line and a table of its arguments.
* ``<!-- studies -->`` -- a table of the studies in ``experiments/<study>/REPORT.md`` (their first heading), each
  rendered as a page of the site.

The study folders under ``experiments/`` are added to the site as they are (reports as pages, figures and data as
files). A docs page links to a report by its path in the repository (``../experiments/<study>/REPORT.md``), which
works on a code host too; this hook rewrites such links to the rendered page. In a report, a link to a file of the
repository outside ``experiments/`` and ``docs/`` (a script, a benchmark) becomes its plain text, since the site does
not carry the source tree. A link whose target does not exist anywhere is left alone, so ``mkdocs build --strict``
fails on it.

Every ``docs/*.md`` page must be in the nav (``validation.nav.omitted_files: warn`` in ``mkdocs.yml``).
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import os
import posixpath
import re
from pathlib import Path
from typing import Any

from griffe_roles import plain_roles  # docs/hooks/, on sys.path while MkDocs loads this hook
from mkdocs.structure.files import File, Files

REPO = Path(__file__).resolve().parents[2]
EXPERIMENTS = "experiments"
SKIPPED_PARTS = {"__pycache__", ".ipynb_checkpoints"}

CONFIG_MARKER = re.compile(r"^<!-- config-fields: ([\w.]+)(?: since ([\w.]+))? -->$", re.MULTILINE)
CLI_MARKER = re.compile(r"^<!-- cli-reference -->$", re.MULTILINE)
STUDIES_MARKER = re.compile(r"^<!-- studies -->$", re.MULTILINE)
LINK = re.compile(r"(!?\[[^\]]*\])\(([^)\s]+)\)")
CODE_SPAN = re.compile(r"(`+)(.+?)\1")


# -- text helpers ------------------------------------------------------------------------------------------------
def table_cell(text: str) -> str:
    """One line of Markdown that is safe in a table cell: pipes outside code spans escaped."""
    text = " ".join(plain_roles(str(text)).split())
    parts = []
    last = 0
    for match in CODE_SPAN.finditer(text):
        parts.append(text[last : match.start()].replace("|", r"\|"))
        parts.append(match.group(0))
        last = match.end()
    parts.append(text[last:].replace("|", r"\|"))
    return "".join(parts)


def code(value: str) -> str:
    """``value`` as one code span, whatever backticks it holds."""
    value = str(value)
    fence = "``" if "`" in value else "`"
    return f"{fence} {value} {fence}" if fence == "``" else f"`{value}`"


def import_object(dotted: str) -> Any:
    module, _, name = dotted.rpartition(".")
    return getattr(importlib.import_module(module), name)


# -- config-field tables -----------------------------------------------------------------------------------------
def field_default(field: dataclasses.Field) -> str:
    if field.default is not dataclasses.MISSING:
        return repr(field.default)
    if field.default_factory is not dataclasses.MISSING:
        return repr(field.default_factory())
    return "required"


def own_fields(cls: type, base: type | None) -> list[dataclasses.Field]:
    """The dataclass fields of ``cls``; with ``base``, only those it adds or redefines on top of ``base``."""
    fields = dataclasses.fields(cls)
    if base is None:
        return list(fields)
    redefined = set()
    for klass in cls.__mro__:
        if klass is base:
            break
        redefined.update(klass.__dict__.get("__annotations__", {}))
    return [f for f in fields if f.name in redefined]


def config_table(cls: type, base: type | None = None) -> str:
    rows = ["| field | type | default | what it does |", "|---|---|---|---|"]
    for field in own_fields(cls, base):
        help_text = field.metadata.get("help")
        if not help_text:
            raise ValueError(f"{cls.__name__}.{field.name} has no field(metadata={{'help': ...}})")
        type_name = field.type if isinstance(field.type, str) else getattr(field.type, "__name__", str(field.type))
        rows.append(
            f"| {code(field.name)} | {code(type_name)} | {code(field_default(field))} | {table_cell(help_text)} |"
        )
    return "\n".join(rows)


def replace_config_markers(markdown: str) -> str:
    def table(match: re.Match) -> str:
        base = import_object(match.group(2)) if match.group(2) else None
        return config_table(import_object(match.group(1)), base)

    return CONFIG_MARKER.sub(table, markdown)


# -- the CLI reference -------------------------------------------------------------------------------------------
def subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def argument_row(action: argparse.Action) -> str | None:
    if isinstance(action, argparse._HelpAction) or action.help == argparse.SUPPRESS:
        return None
    if action.option_strings:
        name = ", ".join(action.option_strings)
        if action.nargs != 0:
            metavar = action.metavar or action.dest.upper()
            name += f" {metavar if isinstance(metavar, str) else ' '.join(metavar)}"
    else:
        name = action.metavar or action.dest
    default = action.default
    shown = "" if default in (None, argparse.SUPPRESS, False) or action.nargs == 0 else code(repr(default))
    help_text = action.help or ""
    try:  # argparse's own expansion of %(default)s and friends
        help_text = help_text % {**vars(action), "prog": "textenv"}
    except (KeyError, TypeError, ValueError):
        pass
    if action.choices and not isinstance(action, argparse._SubParsersAction):
        help_text += f" One of: {', '.join(str(c) for c in action.choices)}."
    return f"| {code(name)} | {shown} | {table_cell(help_text)} |"


def cli_reference() -> str:
    from agents.cli import build_parser

    parser = build_parser()
    out = []
    columns = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = "110"  # argparse wraps usage lines at the terminal width it reads from here
    try:
        sections = [(name, sub, sub.format_usage().strip()) for name, sub in subcommands(parser).items()]
    finally:
        if columns is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = columns
    for name, sub, usage in sections:
        out.append(f"## `textenv {name}`\n")
        if sub.description:
            out.append(plain_roles(sub.description).strip() + "\n")
        out.append(f"```text\n{usage}\n```\n")
        rows = [row for row in map(argument_row, sub._actions) if row]
        if rows:
            out.append("| argument | default | what it does |\n|---|---|---|\n" + "\n".join(rows) + "\n")
    return "\n".join(out)


# -- the studies under experiments/ ------------------------------------------------------------------------------
def study_reports() -> list[Path]:
    return sorted((REPO / EXPERIMENTS).glob("*/REPORT.md"))


def report_title(path: Path) -> str:
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("# "):
            return line[2:].strip()
    return path.parent.name


def studies_table(page_uri: str) -> str:
    reports = study_reports()
    if not reports:
        return "No study has a report yet."
    rows = ["| study | report |", "|---|---|"]
    for path in reports:
        target = posixpath.relpath(f"{EXPERIMENTS}/{path.parent.name}/REPORT.md", posixpath.dirname(page_uri) or ".")
        rows.append(f"| `{path.parent.name}` | [{table_cell(report_title(path))}]({target}) |")
    return "\n".join(rows)


def on_files(files: Files, config: Any) -> Files:
    """Add every file of the study folders under experiments/ (reports as pages, the rest as they are)."""
    root = REPO / EXPERIMENTS
    if not root.is_dir():
        return files
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(REPO)
        if path.is_file() and len(relative.parts) > 2 and not SKIPPED_PARTS & set(relative.parts):
            if path.suffix in {".pyc"}:
                continue
            files.append(File(relative.as_posix(), str(REPO), config["site_dir"], config["use_directory_urls"]))
    return files


def rewrite_links(markdown: str, page_uri: str, docs_dir: Path) -> str:
    """Links from a docs page into ``experiments/`` point at the rendered reports; links from a report to repository
    files the site does not carry become their text."""
    page_repo_path = (
        f"{EXPERIMENTS}/{page_uri.split('/', 1)[1]}" if page_uri.startswith(f"{EXPERIMENTS}/")
        else f"{docs_dir.relative_to(REPO).as_posix()}/{page_uri}"
    )
    in_report = page_uri.startswith(f"{EXPERIMENTS}/")

    def rewrite(match: re.Match) -> str:
        text, target = match.group(1), match.group(2)
        if re.match(r"^[a-z]+:", target) or target.startswith(("#", "/")):
            return match.group(0)
        path, _, anchor = target.partition("#")
        repo_target = posixpath.normpath(posixpath.join(posixpath.dirname(page_repo_path), path))
        if repo_target.startswith("..") or not (REPO / repo_target).exists():
            return match.group(0)  # broken: left for mkdocs to report
        if repo_target.startswith(f"{EXPERIMENTS}/") or repo_target.startswith("docs/"):
            site_target = repo_target.split("/", 1)[1] if repo_target.startswith("docs/") else repo_target
            new = posixpath.relpath(site_target, posixpath.dirname(page_uri) or ".")
            return f"{text}({new}{'#' + anchor if anchor else ''})"
        if in_report and not text.startswith("!"):
            return text[1:-1]  # a script or a file outside the site: keep the words
        return match.group(0)

    return LINK.sub(rewrite, markdown)


# -- mkdocs events -----------------------------------------------------------------------------------------------
def on_page_markdown(markdown: str, page: Any, config: Any, files: Files) -> str:
    uri = page.file.src_uri
    markdown = replace_config_markers(markdown)
    if CLI_MARKER.search(markdown):
        markdown = CLI_MARKER.sub(lambda _m: cli_reference(), markdown)
    if STUDIES_MARKER.search(markdown):
        markdown = STUDIES_MARKER.sub(lambda _m: studies_table(uri), markdown)
    return rewrite_links(markdown, uri, Path(config["docs_dir"]))
