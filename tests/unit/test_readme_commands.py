"""The documentation tells the truth about the command line: every `hybrid ...` command in README.md and docs/*.md
(in code blocks and in inline code) names a real command of the click tree and only options that command, a group
above it or the top-level group has (global options may follow the command); every repository path it names exists;
and nothing refers to files outside the repository or to issue numbers.

How a command is read: the text from ``hybrid`` (at the start of a line or after ``sudo``, ``VAR=value``, ``$(``,
``|``, ``;`` or ``&&``) to the end of the line or of that shell command. ``a|b`` (no spaces) is a choice, each
alternative checked; ``[...]`` marks something optional; a word in capitals, ``<...>`` or ``...`` is a placeholder,
and where a subcommand is a placeholder the rest of the line is not checked.
"""
from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path

import click
import pytest

from hybrid.cli import main

ROOT = Path(__file__).resolve().parents[2]
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```[^\n]*\n(.*?)^```", re.MULTILINE | re.DOTALL)
INLINE = re.compile(r"`([^`\n]+(?:\n[^`\n]+)*)`")
COMMAND_START = re.compile(r"(?:^|(?<=\s)|(?<=\$\()|(?<=[;|&]))(?:\.venv/bin/)?hybrid(?=\s|$)")
LEADERS = {"$", "sudo", "-E", "exec", "time", "env"}
SHELL_BREAKS = re.compile(r"\s(?:\|\|?|&&|;)\s|[)`]|\s#")
REPO_PATH = re.compile(r"(?<![\w./~-])((?:scripts|devstack|docs|hybrid|tests|benchmarks|images|web_tier|app_tier)"
                       r"/[\w./-]*)")
HELP = ("--help", "-h")


@dataclass(frozen=True)
class Line:
    """A command line as written, and where."""

    where: str
    text: str

    def __str__(self) -> str:
        return f"{self.where}: {self.text}"


# ------------------------------------------------------------------ finding the command lines


def code_texts(markdown: str) -> tuple[list[str], str]:
    """The fenced code blocks' lines, and the prose with the blocks taken out."""
    blocks = [line for block in FENCE.findall(markdown) for line in block.splitlines()]
    return blocks, FENCE.sub("", markdown)


def at_command_position(text: str, start: int) -> bool:
    """``hybrid`` at ``start`` begins a command: nothing before it on the line but a prompt, ``sudo``, variable
    assignments, or a shell separator."""
    words = re.split(r"\$\(|\|\|?|;|&&", text[:start])[-1].split()
    return all(w in LEADERS or re.fullmatch(r"[A-Z_][A-Z0-9_]*=\S*", w) for w in words)


def commands_in(text: str) -> list[str]:
    """Each `hybrid ...` command in one line of text, cut at the end of its shell command."""
    found = []
    for match in COMMAND_START.finditer(text):
        if not at_command_position(text, match.start()):
            continue
        rest = text[match.end():]
        cut = SHELL_BREAKS.search(rest)
        found.append("hybrid" + (rest[:cut.start()] if cut else rest).rstrip())
    return found


def document_lines(path: Path) -> list[Line]:
    """Every `hybrid ...` command of one document, from code blocks and from inline code."""
    markdown = path.read_text(encoding="utf-8")
    blocks, prose = code_texts(markdown)
    name = path.relative_to(ROOT).as_posix()
    lines = [Line(name, c) for text in blocks for c in commands_in(text)]
    spans = [" ".join(span.split()) for span in INLINE.findall(prose)]
    lines += [Line(name, c) for span in spans for c in commands_in(span.replace("\\|", "|"))]
    return lines


# ------------------------------------------------------------------ checking one against the click tree


def is_placeholder(word: str) -> bool:
    bare = word.strip("[]")
    return (not bare or "..." in bare or bare.startswith(("<", "{", "$")) or bare.isupper()
            or re.fullmatch(r"[A-Z][A-Z0-9_]*(\.\.\.)?", bare) is not None)


def words_of(command: str) -> list[str]:
    try:
        words = shlex.split(command, comments=False)
    except ValueError:
        words = command.split()
    return [w.strip("[]") for w in words[1:] if w.strip("[]")]


def option_names(command: click.Command) -> dict[str, click.Option]:
    return {name: p for p in command.params if isinstance(p, click.Option) for name in p.opts + p.secondary_opts}


def takes_value(option: click.Option) -> bool:
    return not (option.is_flag or option.count)


def expand_short(word: str) -> list[str]:
    """``-vv`` is ``-v -v``; a long option or a single short one stays as it is."""
    if re.fullmatch(r"-[a-zA-Z]{2,}", word):
        return [f"-{c}" for c in word[1:]]
    return [word]


def problems_of(command: str, root: click.Group = main) -> list[str]:
    """What is wrong with one command line: an unknown subcommand, or an option no command on its path has."""
    problems: list[str] = []
    known = dict(option_names(root))
    current: click.Command = root
    words = words_of(command)
    index = 0
    while index < len(words):
        word = words[index]
        index += 1
        if word.startswith("-") and word != "-":
            name, _, attached = word.partition("=")
            for flag in expand_short(name) if not attached else [name]:
                if flag in HELP:
                    continue
                option = known.get(flag)
                if option is None:
                    problems.append(f"{' '.join(path_of(current))}: no option {flag}")
                elif takes_value(option) and not attached and index < len(words):
                    index += 1  # its value
            continue
        if isinstance(current, click.Group):
            if is_placeholder(word):
                return problems  # a subcommand left to the reader: nothing more to check
            choices = word.split("|")
            missing = [c for c in choices if c not in current.commands]
            if missing:
                problems.append(f"{' '.join(path_of(current))}: no command {', '.join(missing)}")
                return problems
            for other in choices[1:]:  # `plan|up|down`: each alternative with the options that follow
                problems += problems_of(" ".join(["hybrid", *path_of(current)[1:], other, *words[index:]]), root)
            current = current.commands[choices[0]]
            known.update(option_names(current))
    return problems


def path_of(command: click.Command) -> list[str]:
    """The command's words from the top (``hybrid aws plan``), found by walking the tree."""
    def walk(group: click.Command, trail: list[str]) -> list[str] | None:
        if group is command:
            return trail
        for name, sub in getattr(group, "commands", {}).items():
            found = walk(sub, [*trail, name])
            if found:
                return found
        return None
    return walk(main, ["hybrid"]) or ["hybrid", command.name or "?"]


ALL_LINES = [line for path in DOCUMENTS for line in document_lines(path)]


# ------------------------------------------------------------------ the checker checks


def test_the_checker_finds_commands_where_they_are_written():
    text = 'eval "$(hybrid emulator env)" ; sudo FOO=1 hybrid --stack x aws plan | tee out  # hybrid status'
    assert commands_in(text) == ["hybrid emulator env", "hybrid --stack x aws plan"]
    assert commands_in("hybrid/            library and CLI (hybrid = hybrid.cli:run)") == []
    assert commands_in("pip install hybrid") == []


def test_the_checker_refuses_a_made_up_flag_and_command():
    assert problems_of("hybrid aws plan --frobnicate") == ["hybrid aws plan: no option --frobnicate"]
    assert problems_of("hybrid aws frobnicate") == ["hybrid aws: no command frobnicate"]
    assert problems_of("hybrid emulator start|stop|frob") == ["hybrid emulator: no command frob"]


def test_the_checker_accepts_global_options_before_and_after_and_placeholders():
    assert problems_of("hybrid --stack shop --set aws.region=eu-west-1 aws status --json") == []
    assert problems_of("hybrid aws status --stack shop -vv") == []
    assert problems_of("hybrid samples sample DIR [--count 100] [--format hybrid|course]") == []
    assert problems_of("hybrid <group> <cmd> --help") == []
    assert problems_of("hybrid emulator start|stop|status|env") == []


def test_the_documents_have_commands_to_check():
    assert len(ALL_LINES) > 50


# ------------------------------------------------------------------ the documents


@pytest.mark.parametrize("line", ALL_LINES, ids=[f"{i:03d}-{line.text[:60]}" for i, line in enumerate(ALL_LINES)])
def test_every_documented_command_exists_with_its_options(line: Line):
    assert problems_of(line.text) == [], str(line)


def code_of(markdown: str) -> str:
    """The text of a document that is code: its code blocks and inline code spans."""
    blocks, prose = code_texts(markdown)
    return "\n".join([*blocks, *INLINE.findall(prose)])


def test_every_repository_path_the_documents_name_exists():
    missing = []
    for path in DOCUMENTS:
        for match in REPO_PATH.finditer(code_of(path.read_text(encoding="utf-8"))):
            named = match.group(1).rstrip(".,:;)")
            if any(c in named for c in "<>*{}") or named.endswith("/-"):
                continue
            if not (ROOT / named).exists():
                missing.append(f"{path.name}: {named}")
    assert missing == []


def test_every_link_and_picture_of_the_documents_exists():
    missing = []
    for path in DOCUMENTS:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", path.read_text(encoding="utf-8")):
            if "://" in target:
                continue
            if not (path.parent / target).resolve().exists():
                missing.append(f"{path.name}: {target}")
    assert missing == []


def test_the_documents_stay_inside_the_repository_and_name_no_issues():
    found = []
    for path in DOCUMENTS:
        text = path.read_text(encoding="utf-8")
        found += [f"{path.name}: {m}" for m in re.findall(r"\.\./(?:\.\./)*shared\S*", text)]
        found += [f"{path.name}: {m}" for m in re.findall(r"(?<![\w&/])#\d+\b|\b[Ii]ssues? \d+", text)]
        for link in re.findall(r"\]\((\.\./[^)]*)\)", text):
            if ROOT not in (path.parent / link).resolve().parents:
                found.append(f"{path.name}: {link}")
    assert found == []
