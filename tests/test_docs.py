"""The documentation says what the code does (README.md, docs/*.md, SECURITY.md).

What is checked, and the conventions the documents follow for it:

- A fenced block whose info string is `toml` is a **complete** relay.toml: `comet-relay check`
  must accept it as it is. A block whose info string is `toml fragment` is **part** of one: it
  is merged into a minimal complete file (`FRAGMENT_BASE`) and that must pass the check, so a
  fragment's keys and values are checked as well. Any other info string starting with "toml"
  is refused, so no relay.toml escapes the check. The environment holds only the variables a
  block names (by `upstream_token_env`, `admin_token_env`, or a `RELAY_*` name in its text),
  set to dummy values long enough for the checks; a `RELAY_*` name the relay does not read is
  an error.
- Every `comet-relay ...` command shown (in shell blocks, the unit's `ExecStart=`, indented
  code lines, inline code; `scripts/serve ...` counts as `comet-relay serve ...`) is parsed by
  the `relay.cli.main` click group itself, without running it: the subcommand must exist, and
  a command line with options or arguments must parse as click would parse it (every option
  known, values of the right type, required options present). Inline code naming a command
  without options (`comet-relay check`) need only name a real one.
- A fenced block whose info string holds `file=PATH` shows that file and must equal it.
- docs/configuration.md has a table for `[relay]`, `[spaces.ID]` and `[[spaces.ID.api_keys]]`
  listing exactly the keys the relay knows, each with the default the code applies.
- Relative links lead to files that exist, and `#anchors` to headings that exist.
- The systemd units of docs/operations.md give systemd longer to stop than the relay's drain.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner

from relay.cli import forward, main, server_options
from relay.errors import ConfigError
from relay.settings import Settings, load
from tests.docs_support import (
    LINK,
    Block,
    CommandLine,
    anchors,
    blocks,
    command_lines,
    documents,
    paragraphs,
    rel,
    without_inline_code,
)
from tests.support import ROOT

SECRET = "a-secret-key-of-the-docs-test-0123456789"
TOKEN = "a-token-of-the-docs-test-0123456789"
FRAGMENT_BASE: dict[str, Any] = {
    "relay": {"secret_keys": [SECRET]},
    "spaces": {"docs-test": {}},
}


def all_blocks() -> list[Block]:
    return [block for path in documents() for block in blocks(path)]


def toml_blocks() -> list[Block]:
    return [b for b in all_blocks() if b.language.startswith("toml")]


def all_commands() -> list[CommandLine]:
    return [line for path in documents() for line in command_lines(path)]


# --- relay.toml blocks ----------------------------------------------------------------------


def environment(block: Block, document: Mapping[str, Any], tmp_path: Path) -> dict[str, str | None]:
    """The environment a block's check runs with: the relay's own variables of this process
    removed, the ones the block names set (a RELAY_* name the relay does not read fails)."""
    env: dict[str, str | None] = {
        name: None for name in os.environ if name.startswith("RELAY_") or name == "PROMETHEUS_MULTIPROC_DIR"
    }
    relay = document.get("relay", {})
    names = [relay.get("admin_token_env")]
    names += [space.get("upstream_token_env") for space in document.get("spaces", {}).values()]
    env.update({name: TOKEN for name in names if isinstance(name, str)})
    dummies = {
        "RELAY_SECRET_KEYS": SECRET,
        "RELAY_DATABASE": str(tmp_path / "from-the-environment.db"),
        "RELAY_DATA_DIR": str(tmp_path / "data"),
        "RELAY_CONFIG": None,  # the check is given --config
    }
    for name in set(re.findall(r"\bRELAY_[A-Z_]+\b", block.text)):
        assert name in dummies, f"{block.where}: the relay reads no variable {name}"
        env[name] = dummies[name]
    return env


def merge(base: dict[str, Any], part: Mapping[str, Any]) -> dict[str, Any]:
    """`part` merged into a copy of `base`: tables recursively, arrays of tables appended."""
    out = dict(base)
    for key, value in part.items():
        old = out.get(key)
        if isinstance(old, dict) and isinstance(value, dict):
            out[key] = merge(old, value)
        elif isinstance(old, list) and isinstance(value, list) and all(isinstance(v, dict) for v in old + value):
            out[key] = old + value
        else:
            out[key] = value
    return out


def toml_text(document: Mapping[str, Any]) -> str:
    """A TOML document (of what relay.toml holds: tables, arrays of tables, plain values)."""
    lines: list[str] = []

    def key(name: str) -> str:
        return name if re.fullmatch(r"[A-Za-z0-9_-]+", name) else _string(name)

    def value(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, int | float):
            return repr(v)
        if isinstance(v, str):
            return _string(v)
        if isinstance(v, list):
            return "[" + ", ".join(value(item) for item in v) + "]"
        raise TypeError(f"no TOML for {v!r}")

    def is_tables(v: Any) -> bool:
        return isinstance(v, list) and bool(v) and all(isinstance(item, dict) for item in v)

    def table(name: str, body: Mapping[str, Any], header: str) -> None:
        if name:
            lines.append(header.format(name))
        for k, v in body.items():
            if not isinstance(v, dict) and not is_tables(v):
                lines.append(f"{key(k)} = {value(v)}")
        for k, v in body.items():
            inner = f"{name}.{key(k)}" if name else key(k)
            if isinstance(v, dict):
                table(inner, v, "[{}]")
            elif is_tables(v):
                for item in v:
                    table(inner, item, "[[{}]]")

    table("", document, "")
    return "\n".join(lines) + "\n"


def _string(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace('"', '\\"')
    return '"' + re.sub(r"[\x00-\x1f\x7f]", lambda m: f"\\u{ord(m[0]):04x}", escaped) + '"'


def check(text: str, env: Mapping[str, str | None], directory: Path) -> tuple[int, str]:
    config = directory / "relay.toml"
    config.write_text(text, encoding="utf-8")
    result = CliRunner().invoke(main, ["check", "--config", str(config)], env=dict(env))
    return result.exit_code, result.output


@pytest.mark.parametrize("block", toml_blocks(), ids=lambda b: b.where)
def test_each_relay_toml_of_the_docs_passes_check(block: Block, tmp_path: Path) -> None:
    assert block.info in ("toml", "toml fragment"), (
        f"{block.where}: a relay.toml block is ```toml (complete) or ```toml fragment, not {block.info!r}"
    )
    document = tomllib.loads(block.text)
    if block.info == "toml fragment":
        document = merge(FRAGMENT_BASE, document)
        text = toml_text(document)
    else:
        text = block.text
    code, output = check(text, environment(block, document, tmp_path), tmp_path)
    assert code == 0, f"{block.where}: comet-relay check refuses it:\n{output}\n{text}"


def test_there_are_complete_configs_and_fragments() -> None:
    kinds = {b.info for b in toml_blocks()}
    assert kinds == {"toml", "toml fragment"}
    assert len(toml_blocks()) >= 6


def test_the_toml_writer_round_trips(tmp_path: Path) -> None:
    document = merge(FRAGMENT_BASE, {
        "relay": {"trusted_proxies": ["10.0.0.0/8"], "max_body_bytes": 1024, "dedup_window_hours": 1.5},
        "spaces": {"a b": {"active": False, "api_keys": [{"sha256": "0" * 64}]}},
    })
    assert tomllib.loads(toml_text(document)) == document


# --- command lines --------------------------------------------------------------------------


def parse(args: tuple[str, ...], whole: bool) -> click.Command:
    """The command `args` name under `main`; with `whole`, parsed as click parses them."""
    command: click.Command = main
    parent = click.Context(main, info_name="comet-relay")
    rest = list(args)
    while isinstance(command, click.Group):
        if not rest:
            if whole:
                raise click.UsageError(f"{parent.command_path}: no command given")
            return command
        assert not rest[0].startswith("-"), f"{parent.command_path} takes no option {rest[0]}"
        found = command.get_command(parent, rest[0])
        if found is None:
            raise click.UsageError(f"{parent.command_path} has no command {rest[0]!r}")
        command = found
        parent = click.Context(command, info_name=rest[0], parent=parent)
        rest = rest[1:]
    if whole:
        with command.make_context(parent.info_name, rest, parent=parent.parent):
            pass
    return command


@pytest.mark.parametrize("line", all_commands(), ids=lambda c: f"{c.where}:{' '.join(c.args)}")
def test_each_command_line_of_the_docs_parses(line: CommandLine, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RELAY_CONFIG", raising=False)  # --config must be written out
    try:
        parse(line.args, line.whole)
    except click.ClickException as exc:
        pytest.fail(f"{line.where}: `{line.text}`: {exc.format_message()}")


def test_the_command_check_catches_what_it_should(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RELAY_CONFIG", raising=False)
    for args in [
        ("forward", "--metrics-port", "9101"),  # --config is required
        ("serve", "--threads", "2"),  # no such option
        ("outbox", "list", "--config", "x"),  # no such command
        ("serve", "--port", "http"),  # not a number
        ("outbox", "migrate", "--to", "postgres://x", "--config", "x"),
    ]:
        with pytest.raises(click.ClickException):
            parse(args, whole=True)
    parse(("outbox", "replay", "3", "4", "--config", "x"), whole=True)
    parse(("outbox", "stats"), whole=False)


def test_every_subcommand_is_shown_somewhere() -> None:
    shown = {tuple(c.args[:2]) for c in all_commands()} | {tuple(c.args[:1]) for c in all_commands()}
    missing = []
    for name, command in main.commands.items():
        subs = command.commands if isinstance(command, click.Group) else {}
        missing += [f"{name} {sub}" for sub in subs if (name, sub) not in shown]
        if not subs and (name,) not in shown:
            missing.append(name)
    assert not missing, f"commands the docs never show: {missing}"


# --- shown files ----------------------------------------------------------------------------


def test_blocks_that_show_a_file_match_it() -> None:
    shown = [b for b in all_blocks() if "file=" in b.info]
    assert len(shown) >= 2
    for block in shown:
        (name,) = re.findall(r"file=(\S+)", block.info)
        assert (ROOT / name).read_text(encoding="utf-8") == block.text, (
            f"{block.where} shows {name} but differs from it"
        )


# --- configuration.md -------------------------------------------------------------------------


def config_table(heading: str) -> dict[str, tuple[str, str]]:
    """key -> (default, description) of the table under `## heading` in docs/configuration.md."""
    lines = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8").splitlines()
    start = lines.index(f"## {heading}")
    rows: dict[str, tuple[str, str]] = {}
    for line in lines[start + 1 :]:
        if line.startswith("## "):
            break
        cells = [c.strip() for c in line.strip().strip("|").split("|")] if line.startswith("| `") else []
        if cells:
            key = cells[0].strip("`")
            assert key not in rows, f"{key} listed twice under {heading}"
            rows[key] = (cells[1], cells[2])
    assert rows, f"no table under {heading}"
    return rows


def known_keys(tmp_path: Path) -> dict[str, set[str]]:
    """The keys the relay knows, from its own "unknown key" message."""
    config = tmp_path / "unknown.toml"
    config.write_text(
        f'[relay]\nsecret_keys = ["{SECRET}"]\nqqqqqqqqqqqq = 1\n[spaces.s]\nqqqqqqqqqqqq = 1\n'
        "[[spaces.s.api_keys]]\nqqqqqqqqqqqq = 1\n"
    )
    with pytest.raises(ConfigError) as caught:
        load(str(config), {})
    found: dict[str, set[str]] = {}
    for problem in caught.value.problems:
        where, _, message = problem.partition(": ")
        if "known keys are" in message:
            found[where.removesuffix(".qqqqqqqqqqqq")] = set(message.split("known keys are ")[1].split(", "))
    return found


TABLES = {"`[relay]`": "relay", "`[spaces.ID]`": "spaces.s", "`[[spaces.ID.api_keys]]`": "spaces.s.api_keys[0]"}


def test_configuration_md_lists_exactly_the_keys_the_relay_knows(tmp_path: Path) -> None:
    known = known_keys(tmp_path)
    for heading, where in TABLES.items():
        documented = set(config_table(heading))
        assert documented == known[where], (
            f"{heading}: undocumented {sorted(known[where] - documented)}, "
            f"unknown to the relay {sorted(documented - known[where])}"
        )


def _plain(value: Any) -> Any:
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    if isinstance(value, frozenset | set):
        return sorted(value)
    return value


def test_configuration_md_gives_the_defaults_of_the_code(tmp_path: Path) -> None:
    minimal = (
        f'[relay]\nsecret_keys = ["{SECRET}"]\n[spaces.bare]\n'
        f'[spaces.keyed]\n[[spaces.keyed.api_keys]]\nsha256 = "{"0" * 64}"\n'
    )
    (tmp_path / "relay.toml").write_text(minimal)
    settings = load(str(tmp_path / "relay.toml"), {})
    objects = {
        "`[relay]`": settings,
        "`[spaces.ID]`": settings.spaces["bare"],
        "`[[spaces.ID.api_keys]]`": settings.spaces["keyed"].api_keys[0],
    }
    for heading, obj in objects.items():
        for key, (cell, _) in config_table(heading).items():
            actual = getattr(obj, key)
            literal = re.fullmatch(r"`(.+)`", cell)
            if literal:
                expected = tomllib.loads(f"v = {literal[1]}")["v"]
                if key == "database":
                    expected = str(tmp_path / expected)  # relative to the file's directory
                assert _plain(actual) == _plain(expected), f"{heading} {key}: the code's default is {actual!r}"
            elif cell.startswith("none: required"):
                pass  # test_the_required_keys_are_required
            elif cell == "none":
                assert actual in (None, (), frozenset()), f"{heading} {key}: the code's default is {actual!r}"
            elif cell == "the `[relay]` value":
                assert actual == getattr(settings, key)
            else:
                pytest.fail(f"{heading} {key}: a default the test cannot read: {cell!r}")


def test_the_required_keys_are_required(tmp_path: Path) -> None:
    required = [k for h in TABLES for k, (cell, _) in config_table(h).items() if cell.startswith("none: required")]
    assert sorted(required) == ["secret_keys", "sha256"]
    config = tmp_path / "relay.toml"
    config.write_text("[relay]\n[spaces.s]\n[[spaces.s.api_keys]]\npermissions = []\n")
    with pytest.raises(ConfigError) as caught:
        load(str(config), {})
    text = "\n".join(caught.value.problems)
    assert "relay.secret_keys" in text and "spaces.s.api_keys[0].sha256: required" in text


def test_the_documented_minimum_length_of_secrets_is_the_codes(tmp_path: Path) -> None:
    rows = config_table("`[relay]`")
    said = rows["secret_keys"][1] + rows["admin_token_env"][1]
    minimums = {int(n) for n in re.findall(r"at least (\d+) characters", said)}
    assert len(minimums) == 1, f"secret_keys and admin_token_env say {sorted(minimums)}"
    (minimum,) = minimums
    config = tmp_path / "relay.toml"
    env = {"ADMIN": "a" * minimum}
    for length, ok in ((minimum - 1, False), (minimum, True)):
        config.write_text(f'[relay]\nsecret_keys = ["{"k" * length}"]\n[spaces.s]\n')
        if ok:
            load(str(config), env)
        else:
            with pytest.raises(ConfigError, match=f"at least {minimum} characters"):
                load(str(config), env)
    config.write_text(f'[relay]\nsecret_keys = ["{"k" * minimum}"]\nadmin_token_env = "ADMIN"\n[spaces.s]\n')
    with pytest.raises(ConfigError, match=f"at least {minimum} characters"):
        load(str(config), {"ADMIN": "a" * (minimum - 1)})
    load(str(config), env)


def test_the_environment_variables_documented_are_the_ones_the_relay_reads() -> None:
    source = "\n".join(p.read_text(encoding="utf-8") for p in (ROOT / "relay").rglob("*.py"))
    read = set(re.findall(r"[\"'](RELAY_[A-Z][A-Z_]*)[\"']", source))
    assert read, "found no RELAY_* variable in relay/"
    configuration = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    assert read <= set(re.findall(r"`(RELAY_[A-Z_]+)`", configuration)), "undocumented variables"
    shown = {n for p in documents() for n in re.findall(r"\bRELAY_[A-Z][A-Z_]*\b", p.read_text(encoding="utf-8"))}
    assert shown <= read, f"documented but never read: {sorted(shown - read)}"


# --- links -----------------------------------------------------------------------------------


def link_sources() -> list[Path]:
    return [*documents(), ROOT / "bench" / "README.md"]


def test_relative_links_and_anchors_lead_somewhere() -> None:
    broken = []
    for path in link_sources():
        for number, text in paragraphs(path):
            for target in LINK.findall(without_inline_code(text)):
                if re.match(r"[a-z]+:", target):
                    continue
                name, _, anchor = target.partition("#")
                goal = (path.parent / name).resolve() if name else path
                if not goal.exists():
                    broken.append(f"{rel(path)}:{number}: {target} (no such file)")
                elif anchor and goal.suffix == ".md" and anchor not in anchors(goal):
                    broken.append(f"{rel(path)}:{number}: {target} (no such heading)")
    assert not broken, "\n".join(broken)


def test_the_link_check_sees_links() -> None:
    readme = ROOT / "README.md"
    found = [t for _, text in paragraphs(readme) for t in LINK.findall(without_inline_code(text))]
    assert "docs/operations.md#nginx" in found and "#the-two-commands" in found
    assert "the-two-commands" in anchors(readme)


# --- the systemd units -----------------------------------------------------------------------


def test_systemd_gives_the_relay_longer_to_stop_than_its_drain() -> None:
    """serve waits for open requests (uvicorn's graceful shutdown), then stops its forwarder,
    whose requests in flight get the same bound as `forward --shutdown-timeout` by default."""
    units = [b for b in blocks(ROOT / "docs" / "operations.md") if b.language == "ini"]
    assert units, "docs/operations.md shows no systemd unit"
    http_drain = server_options(Settings(), "127.0.0.1", 8000)["timeout_graceful_shutdown"]
    forward_drain = next(p.default for p in forward.params if p.name == "shutdown_timeout")
    for unit in units:
        stop = re.search(r"^TimeoutStopSec=(\d+)$", unit.text, re.MULTILINE)
        start = re.search(r"^ExecStart=\S+ (serve|forward)\b(.*)$", unit.text, re.MULTILINE)
        assert stop and start, f"{unit.where}: no TimeoutStopSec or no ExecStart of serve/forward"
        own = re.search(r"--shutdown-timeout[ =](\d+)", start[2])
        drain = float(own[1]) if own else forward_drain
        if start[1] == "serve":
            drain = http_drain + (0 if "--no-forward" in start[2] else forward_drain)
        assert int(stop[1]) > drain, f"{unit.where}: TimeoutStopSec={stop[1]} is not above the drain of {drain} s"


# --- the benchmarks' commands ----------------------------------------------------------------


def test_every_benchmark_command_shown_names_a_module_and_its_options() -> None:
    """Each `python -m bench.NAME --option ...` in bench/README.md and the README: the module
    runs (`--help`) and offers every option shown."""
    shown: dict[str, set[str]] = {}
    for path in (ROOT / "bench" / "README.md", ROOT / "README.md"):
        for module, rest in re.findall(r"python -m (bench\.\w+)([^`#\n]*)", path.read_text("utf-8")):
            shown.setdefault(module, set()).update(re.findall(r"--[a-z][a-z-]*", rest))
    assert {"bench.ingest", "bench.profile", "bench.drain", "bench.soak"} <= set(shown)
    for module, options in sorted(shown.items()):
        done = subprocess.run([sys.executable, "-m", module, "--help"], check=False, cwd=ROOT,
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, f"{module} --help: {done.stderr}"
        assert not options - set(re.findall(r"--[a-z][a-z-]*", done.stdout)), (module, options)
