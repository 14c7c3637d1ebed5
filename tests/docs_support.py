"""Reading the project's Markdown for the documentation tests: fenced blocks, prose lines,
inline code, links, heading anchors, and the shell command lines shown in them."""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.support import ROOT

FENCE = re.compile(r"^(\s*)(`{3,}|~{3,})(.*)$")
INLINE_CODE = re.compile(r"(?<!`)(`+)(?!`)(.+?)(?<!`)\1(?!`)")
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
SEPARATORS = {";", "&&", "||", "|", "&", "(", ")"}
SHELL_INFOS = {"", "sh", "bash", "shell", "console"}


def documents() -> list[Path]:
    """The files whose examples must hold: README.md, docs/*.md and SECURITY.md."""
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "SECURITY.md"]


def rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


@dataclass(frozen=True)
class Block:
    """A fenced code block: its file, the line of its opening fence, its info string, its text."""

    path: Path
    line: int
    info: str
    text: str

    @property
    def language(self) -> str:
        return self.info.split()[0] if self.info.split() else ""

    @property
    def where(self) -> str:
        return f"{rel(self.path)}:{self.line}"


def blocks(path: Path) -> list[Block]:
    """Every fenced block of a Markdown file, its lines without the fence's indentation."""
    found: list[Block] = []
    lines = path.read_text(encoding="utf-8").splitlines()
    i = 0
    while i < len(lines):
        opening = FENCE.match(lines[i])
        if opening is None:
            i += 1
            continue
        indent, fence, info = len(opening[1]), opening[2], opening[3].strip()
        body: list[str] = []
        j = i + 1
        while j < len(lines):
            closing = FENCE.match(lines[j])
            if closing and closing[2][0] == fence[0] and len(closing[2]) >= len(fence) and not closing[3].strip():
                break
            line = lines[j]
            body.append(line[indent:] if not line[:indent].strip() else line.lstrip())
            j += 1
        found.append(Block(path, i + 1, info, "\n".join(body) + "\n"))
        i = j + 1
    return found


def prose(path: Path) -> Iterator[tuple[int, str]]:
    """(line number, line) of every line outside fenced blocks."""
    inside: str | None = None
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        fence = FENCE.match(line)
        if inside is None:
            if fence:
                inside = fence[2]
                continue
            yield number, line
        elif fence and fence[2][0] == inside[0] and len(fence[2]) >= len(inside) and not fence[3].strip():
            inside = None


def paragraphs(path: Path) -> Iterator[tuple[int, str]]:
    """(first line number, text) of each run of prose lines, joined with spaces: inline code
    and links may break across lines."""
    start, run = 0, []
    for number, line in prose(path):
        if line.strip():
            if not run:
                start = number
            run.append(line.strip())
        elif run:
            yield start, " ".join(run)
            run = []
    if run:
        yield start, " ".join(run)


def inline_code(line: str) -> list[str]:
    return [m[2].strip() for m in INLINE_CODE.finditer(line)]


def without_inline_code(line: str) -> str:
    return INLINE_CODE.sub("", line)


def slug(heading: str) -> str:
    """GitHub's anchor for a heading's text: lower case, punctuation dropped, spaces to '-'."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link counts by its text
    text = re.sub(r"[^\w\- ]", "", text.lower())
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """The anchors of a Markdown file's headings, a repeated one numbered as GitHub does."""
    seen: dict[str, int] = {}
    found: set[str] = set()
    for _, line in prose(path):
        match = HEADING.match(line)
        if match is None:
            continue
        base = slug(match[2])
        n = seen.get(base, 0)
        seen[base] = n + 1
        found.add(base if n == 0 else f"{base}-{n}")
    return found


# --- command lines ------------------------------------------------------------------------


@dataclass(frozen=True)
class CommandLine:
    """A `comet-relay` command shown in a document: where, the arguments after the program,
    and whether it is a whole command line (checked fully) or only names a command."""

    where: str
    text: str
    args: tuple[str, ...]
    whole: bool


def _words(line: str) -> list[str]:
    lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    lexer.commenters = "#"
    return list(lexer)


def _simple_commands(words: list[str]) -> Iterator[list[str]]:
    """The simple commands of a shell line, without redirections."""
    current: list[str] = []
    skip_target = False
    for word in words:
        if word in SEPARATORS:
            yield current
            current = []
            continue
        if skip_target:
            skip_target = False
            continue
        if word[0] in "<>":
            if current and current[-1].isdigit():
                current.pop()  # the 2 of 2>&1
            skip_target = not word.endswith("&")
            if word.endswith("&"):
                skip_target = True
            continue
        current.append(word)
    yield current


def _program(words: list[str]) -> tuple[str, list[str]] | None:
    """The program of a simple command and its arguments, past `VAR=value`, sudo and env."""
    i = 0
    while i < len(words):
        word = words[i]
        if ASSIGNMENT.match(word) or word in ("env", "exec", "nohup", "time"):
            i += 1
        elif word == "sudo":
            i += 1
            while i < len(words) and words[i].startswith("-"):
                i += 2 if words[i] in ("-u", "-g") else 1
        else:
            return word, words[i + 1 :]
    return None


def commands_in_shell(text: str, where: str, whole: bool | None = None) -> list[CommandLine]:
    """Every comet-relay command of a piece of shell text (continuation lines joined).

    `scripts/serve ARGS` counts as `comet-relay serve ARGS`, which it runs; the string of
    `sh -c '...'` is read as shell too. `whole=None`: a command with arguments is a whole
    command line and one without only names its command.
    """
    found: list[CommandLine] = []
    for line in text.replace("\\\n", " ").splitlines():
        line = line.strip()
        if line.startswith("ExecStart="):
            line = line.removeprefix("ExecStart=")
        if "comet-relay" not in line and "scripts/serve" not in line:
            continue
        for words in _simple_commands(_words(line)):
            program = _program(words)
            if program is None:
                continue
            name, args = program
            if name in ("sh", "bash") and args[:1] == ["-c"] and len(args) > 1:
                found += commands_in_shell(args[1], where, whole)
                continue
            if name == "scripts/serve" or name.endswith("/scripts/serve"):
                args = ["serve", *args]
            elif not (name == "comet-relay" or name.endswith("bin/comet-relay")):
                continue
            is_whole = whole if whole is not None else any(a.startswith("-") for a in args)
            found.append(CommandLine(where, line, tuple(args), is_whole))
    return found


def _looks_like_command(text: str) -> bool:
    words = text.split()
    while words and ASSIGNMENT.match(words[0]):
        words = words[1:]
    if words[:1] == ["sudo"]:
        return "comet-relay" in text
    return bool(words) and (
        words[0] in ("comet-relay", "scripts/serve") or words[0].endswith("bin/comet-relay")
    )


def command_lines(path: Path) -> list[CommandLine]:
    """The comet-relay commands a document shows: in shell and systemd blocks, in the inline
    code of other blocks' comments and of the prose, and in indented code lines."""
    found: list[CommandLine] = []
    for block in blocks(path):
        if block.language in SHELL_INFOS or block.language == "ini":
            found += commands_in_shell(block.text, block.where, whole=True)
        else:
            for offset, line in enumerate(block.text.splitlines(), 1):
                for code in inline_code(line):
                    if _looks_like_command(code):
                        found += commands_in_shell(code, f"{block.where}+{offset}")
    for number, line in prose(path):
        if line.startswith("    ") and _looks_like_command(line.strip()):
            found += commands_in_shell(line.strip(), f"{rel(path)}:{number}", whole=True)
    for number, text in paragraphs(path):
        for code in inline_code(text):
            if _looks_like_command(code):
                found += commands_in_shell(code, f"{rel(path)}:{number}")
    return found
