"""relay.toml loading: every problem named by key, env overrides, the embedded default."""

from __future__ import annotations

import dataclasses
import os
import stat
from pathlib import Path

import pytest

from relay import settings
from relay.auth import api_keys as keys
from relay.errors import ConfigError

SECRET = "0123456789abcdef-secret"
KEY_HASH = keys.hash_key("crk_test-key-acme")
OTHER_HASH = keys.hash_key("crk_test-key-other")

RELAY = f"""\
[relay]
database = "relay.db"
secret_keys = ["{SECRET}"]
trusted_proxies = ["127.0.0.1", "10.0.0.0/8", "::1"]
dedup_window_hours = 48
max_body_bytes = 65536
"""

ACME = f"""\
[spaces.acme]
active = true
rate_limit_per_minute = 1000
custom_events = ["custom_event_3"]
site_key = "pk_acme"
allowed_origins = ["https://acme.example"]
upstream_url = "https://app.cometly.com/public-api/v1/events/track"
upstream_token_env = "ACME_COMETLY_TOKEN"
upstream_rate_per_minute = 1000

[[spaces.acme.api_keys]]
sha256 = "{KEY_HASH}"
permissions = ["events:write"]
"""

ENV = {"ACME_COMETLY_TOKEN": "tok-acme-upstream-secret"}


def write(directory: Path, text: str, name: str = "relay.toml") -> str:
    path = directory / name
    path.write_text(text)
    return str(path)


def problems_of(path: str, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        settings.load(path, ENV if env is None else env)
    assert caught.value.source == path
    return caught.value.problems


def replace_line(text: str, key: str, line: str) -> str:
    """`text` with the line that sets `key` replaced by `line` (or removed if `line` is "")."""
    out = [line if row.split("=")[0].strip() == key else row for row in text.splitlines()]
    return "\n".join(row for row in out if row != "") + "\n"


# --- a valid file ----------------------------------------------------------------------------


def test_the_documented_example_loads(tmp_path: Path) -> None:
    loaded = settings.load(write(tmp_path, RELAY + ACME), ENV)

    assert loaded.database == str(tmp_path / "relay.db")
    assert loaded.secret_keys == (SECRET,)
    assert loaded.trusted_proxies == ("127.0.0.1", "10.0.0.0/8", "::1")
    assert loaded.dedup_window_hours == 48.0
    assert loaded.max_body_bytes == 65536
    assert loaded.source == str(tmp_path / "relay.toml")
    acme = loaded.spaces["acme"]
    assert acme == settings.Space(
        id="acme",
        active=True,
        rate_limit_per_minute=1000,
        custom_events=frozenset({"custom_event_3"}),
        site_key="pk_acme",
        allowed_origins=("https://acme.example",),
        upstream_url="https://app.cometly.com/public-api/v1/events/track",
        upstream_token_env="ACME_COMETLY_TOKEN",
        upstream_token="tok-acme-upstream-secret",
        upstream_rate_per_minute=1000,
        dedup_window_hours=48.0,
        api_keys=(settings.ApiKey(sha256=KEY_HASH, permissions=frozenset({"events:write"})),),
    )


def test_defaults_and_optional_keys(tmp_path: Path) -> None:
    text = f"""\
[relay]
secret_keys = ["{SECRET}"]
dedup_window_hours = 12
upstream_timeout_seconds = 2.5
max_event_age_hours = 24
delivered_retention_days = 1

[spaces.a]

[spaces.b]
dedup_window_hours = 1.5
[[spaces.b.api_keys]]
sha256 = "{KEY_HASH.upper()}"
[[spaces.b.api_keys]]
sha256 = "{OTHER_HASH}"
permissions = ["events:read"]
"""
    loaded = settings.load(write(tmp_path, text), {})

    assert (loaded.upstream_timeout_seconds, loaded.max_event_age_hours) == (2.5, 24.0)
    assert loaded.delivered_retention_days == 1.0
    assert loaded.trusted_proxies == ("127.0.0.1",)
    a, b = loaded.spaces["a"], loaded.spaces["b"]
    assert (a.active, a.rate_limit_per_minute, a.upstream_url, a.upstream_token) == (
        True,
        1000,
        None,
        None,
    )
    assert a.dedup_window_hours == 12.0  # the relay's window
    assert b.dedup_window_hours == 1.5
    assert b.api_keys == (
        settings.ApiKey(sha256=KEY_HASH),  # lowercased; events:write by default
        settings.ApiKey(sha256=OTHER_HASH, permissions=frozenset({"events:read"})),
    )


def test_origins_are_normalised_as_browsers_send_them(tmp_path: Path) -> None:
    origins = '["HTTPS://Acme.Example:443", "http://localhost:8080", "http://[::1]:80"]'
    text = replace_line(RELAY + ACME, "allowed_origins", f"allowed_origins = {origins}")
    loaded = settings.load(write(tmp_path, text), ENV)
    assert loaded.spaces["acme"].allowed_origins == (
        "https://acme.example",
        "http://localhost:8080",
        "http://[::1]",
    )


def test_settings_are_frozen_and_the_token_is_not_in_repr(tmp_path: Path) -> None:
    loaded = settings.load(write(tmp_path, RELAY + ACME), ENV)
    with pytest.raises(dataclasses.FrozenInstanceError):
        loaded.database = "other.db"  # type: ignore[misc]
    with pytest.raises(TypeError):
        loaded.spaces["evil"] = loaded.spaces["acme"]  # type: ignore[index]
    assert "tok-acme-upstream-secret" not in repr(loaded)
    assert SECRET not in repr(loaded)


def test_a_token_env_without_an_upstream_may_be_unset(tmp_path: Path) -> None:
    text = replace_line(RELAY + ACME, "upstream_url", "")
    loaded = settings.load(write(tmp_path, text), {})
    assert loaded.spaces["acme"].upstream_url is None
    assert loaded.spaces["acme"].upstream_token is None


def test_trust_every_proxy_alone(tmp_path: Path) -> None:
    text = replace_line(RELAY + ACME, "trusted_proxies", 'trusted_proxies = ["*"]')
    assert settings.load(write(tmp_path, text), ENV).trusted_proxies == ("*",)


# --- the database path and the environment -------------------------------------------------


def test_a_relative_database_is_relative_to_the_config_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "conf").mkdir()
    text = replace_line(RELAY + ACME, "database", 'database = "data/events.db"')
    path = write(tmp_path / "conf", text)
    monkeypatch.chdir("/")
    assert settings.load(path, ENV).database == str(tmp_path / "conf" / "data" / "events.db")
    relative = os.path.relpath(path, tmp_path)
    monkeypatch.chdir(tmp_path)
    assert settings.load(relative, ENV).database == str(tmp_path / "conf" / "data" / "events.db")


@pytest.mark.parametrize("database", ["/var/lib/relay/relay.db", "redis://cache:6379/0"])
def test_absolute_paths_and_redis_urls_are_kept(tmp_path: Path, database: str) -> None:
    text = replace_line(RELAY + ACME, "database", f'database = "{database}"')
    assert settings.load(write(tmp_path, text), ENV).database == database


def test_relay_database_overrides_relative_to_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(tmp_path, RELAY + ACME)
    monkeypatch.chdir("/tmp")
    env = {**ENV, "RELAY_DATABASE": "elsewhere.db"}
    assert settings.load(path, env).database == os.path.join("/tmp", "elsewhere.db")
    env = {**ENV, "RELAY_DATABASE": "redis://r:6379/1"}
    assert settings.load(path, env).database == "redis://r:6379/1"


def test_relay_secret_keys_overrides_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, RELAY + ACME)
    env = {**ENV, "RELAY_SECRET_KEYS": " old-key-0123456789 , new-key-0123456789 ,"}
    assert settings.load(path, env).secret_keys == ("old-key-0123456789", "new-key-0123456789")


def test_relay_secret_keys_may_stand_in_for_a_missing_relay_table(tmp_path: Path) -> None:
    env = {**ENV, "RELAY_SECRET_KEYS": "from-the-environment-1"}
    loaded = settings.load(write(tmp_path, ACME), env)
    assert loaded.secret_keys == ("from-the-environment-1",)
    assert loaded.database == str(tmp_path / "relay.db")


def test_relay_secret_keys_too_short_is_named(tmp_path: Path) -> None:
    env = {**ENV, "RELAY_SECRET_KEYS": "shortsecret"}
    problems = problems_of(write(tmp_path, RELAY + ACME), env)
    assert problems == [
        "RELAY_SECRET_KEYS[0]: a secret key needs at least 16 characters, this one has 11"
    ]


# --- every problem, named by its key ---------------------------------------------------------

# (id, TOML text, a fragment of the one expected problem)
CASES: list[tuple[str, str, str]] = [
    (
        "rate limit not a number",
        replace_line(RELAY + ACME, "rate_limit_per_minute", 'rate_limit_per_minute = "fast"'),
        'spaces.acme.rate_limit_per_minute: must be a positive integer, got "fast"',
    ),
    (
        "rate limit zero",
        replace_line(RELAY + ACME, "rate_limit_per_minute", "rate_limit_per_minute = 0"),
        "spaces.acme.rate_limit_per_minute: must be a positive integer, got 0",
    ),
    (
        "upstream rate a float",
        replace_line(RELAY + ACME, "upstream_rate_per_minute", "upstream_rate_per_minute = 1.5"),
        "spaces.acme.upstream_rate_per_minute: must be a positive integer, got 1.5",
    ),
    (
        "body limit negative",
        replace_line(RELAY + ACME, "max_body_bytes", "max_body_bytes = -1"),
        "relay.max_body_bytes: must be a positive integer, got -1",
    ),
    (
        "dedup window a boolean",
        replace_line(RELAY + ACME, "dedup_window_hours", "dedup_window_hours = true"),
        "relay.dedup_window_hours: must be a positive number, got true",
    ),
    (
        "dedup window nan",
        replace_line(RELAY + ACME, "dedup_window_hours", "dedup_window_hours = nan"),
        "relay.dedup_window_hours: must be a positive number, got NaN",
    ),
    (
        "space dedup window zero",
        RELAY + ACME.replace("active = true", "active = true\ndedup_window_hours = 0"),
        "spaces.acme.dedup_window_hours: must be a positive number, got 0",
    ),
    (
        "timeout a string",
        RELAY + 'upstream_timeout_seconds = "10s"\n' + ACME,
        'relay.upstream_timeout_seconds: must be a positive number, got "10s"',
    ),
    (
        "active not a boolean",
        replace_line(RELAY + ACME, "active", 'active = "yes"'),
        'spaces.acme.active: must be true or false, got "yes"',
    ),
    (
        "unknown relay key",
        RELAY.replace("database", "databse") + ACME,
        'relay.databse: unknown key; did you mean "database"?',
    ),
    (
        "unknown space key",
        replace_line(RELAY + ACME, "rate_limit_per_minute", "rate_limit = 5"),
        'spaces.acme.rate_limit: unknown key; did you mean "rate_limit_per_minute"?',
    ),
    (
        "unknown top-level table",
        RELAY + ACME + "[relays]\nmax_body_bytes = 1\n",
        'relays: unknown key; did you mean "relay"?',
    ),
    (
        "unknown api key field",
        RELAY + ACME.replace("permissions", "permission"),
        'spaces.acme.api_keys[0].permission: unknown key; did you mean "permissions"?',
    ),
    (
        "unknown key with nothing close",
        RELAY + ACME.replace("active = true", "zzz = 1"),
        "spaces.acme.zzz: unknown key; known keys are active, allowed_origins",
    ),
    (
        "sha256 too short",
        RELAY + ACME.replace(KEY_HASH, "abc123"),
        "spaces.acme.api_keys[0].sha256: must be 64 hex characters (a SHA-256), got 6",
    ),
    (
        "sha256 not hex",
        RELAY + ACME.replace(KEY_HASH, "g" * 64),
        "spaces.acme.api_keys[0].sha256: must be 64 hex characters",
    ),
    (
        "sha256 missing",
        RELAY + ACME.replace(f'sha256 = "{KEY_HASH}"', ""),
        "spaces.acme.api_keys[0].sha256: required",
    ),
    (
        "api_keys a table, not an array",
        RELAY + ACME.replace("[[spaces.acme.api_keys]]", "[spaces.acme.api_keys]"),
        "spaces.acme.api_keys: must be an array of tables",
    ),
    (
        "permission not resource:action",
        RELAY + ACME.replace('["events:write"]', '["events:write", "write"]'),
        (
            'spaces.acme.api_keys[0].permissions[1]: must be a permission such as "events:write",'
            ' got "write"'
        ),
    ),
    (
        "permissions a string",
        RELAY + ACME.replace('["events:write"]', '"events:write"'),
        'spaces.acme.api_keys[0].permissions: must be a list, got "events:write"',
    ),
    (
        "custom event out of range",
        RELAY + ACME.replace('["custom_event_3"]', '["custom_event_3", "custom_event_51"]'),
        (
            "spaces.acme.custom_events[1]: must be one of custom_event_1 ..."
            ' custom_event_50, got "custom_event_51"'
        ),
    ),
    (
        "custom event a standard event",
        RELAY + ACME.replace('["custom_event_3"]', '["purchase"]'),
        (
            "spaces.acme.custom_events[0]: must be one of custom_event_1 ..."
            ' custom_event_50, got "purchase"'
        ),
    ),
    (
        "custom event zero",
        RELAY + ACME.replace('["custom_event_3"]', '["custom_event_0"]'),
        "spaces.acme.custom_events[0]: must be one of custom_event_1",
    ),
    (
        "origin with a path",
        RELAY + ACME.replace('"https://acme.example"', '"https://acme.example/shop"'),
        (
            "spaces.acme.allowed_origins[0]: must be scheme://host[:port] (http or"
            ' https, no path), got "https://acme.example/shop"'
        ),
    ),
    (
        "origin with a trailing slash",
        RELAY + ACME.replace('"https://acme.example"', '"https://acme.example/"'),
        "spaces.acme.allowed_origins[0]: must be scheme://host[:port]",
    ),
    (
        "origin without a scheme",
        RELAY + ACME.replace('"https://acme.example"', '"acme.example"'),
        "spaces.acme.allowed_origins[0]: must be scheme://host[:port]",
    ),
    (
        "origin as a string, not a list",
        RELAY + ACME.replace('["https://acme.example"]', '"https://acme.example"'),
        'spaces.acme.allowed_origins: must be a list, got "https://acme.example"',
    ),
    (
        "upstream not http",
        RELAY + ACME.replace('"https://app.cometly.com', '"ftp://app.cometly.com'),
        'spaces.acme.upstream_url: must be an http:// or https:// URL, got "ftp://app.cometly.com',
    ),
    (
        "upstream token env unset",
        RELAY + ACME.replace("ACME_COMETLY_TOKEN", "MISSING_TOKEN"),
        "spaces.acme.upstream_token_env: the environment variable MISSING_TOKEN is not set",
    ),
    (
        "upstream without a token env",
        replace_line(RELAY + ACME, "upstream_token_env", ""),
        "spaces.acme.upstream_token_env: required when upstream_url is set",
    ),
    (
        "token env not a variable name",
        RELAY + ACME.replace('"ACME_COMETLY_TOKEN"', '"acme token"'),
        (
            "spaces.acme.upstream_token_env: must be the name of an environment"
            ' variable, got "acme token"'
        ),
    ),
    (
        "site key with a space",
        RELAY + ACME.replace('"pk_acme"', '"pk acme"'),
        "spaces.acme.site_key: must be letters, digits",
    ),
    (
        "duplicate site key",
        RELAY + ACME + '[spaces.beta]\nsite_key = "pk_acme"\n',
        'spaces.beta.site_key: "pk_acme" is already the site key of Space "acme"',
    ),
    (
        "same key in two spaces",
        RELAY + ACME + f'[[spaces.beta.api_keys]]\nsha256 = "{OTHER_HASH}"\n'
        f'[[spaces.beta.api_keys]]\nsha256 = "{KEY_HASH}"\n',
        'spaces.beta.api_keys[1].sha256: the same key is already configured for Space "acme"',
    ),
    (
        "space id with a dot",
        RELAY + ACME + '[spaces."a.b"]\n',
        "spaces.\"a.b\": a Space id may hold only letters, digits, '_' and '-'",
    ),
    (
        "space not a table",
        RELAY + ACME.replace("[spaces.acme]", "[spaces]\nbeta = 5\n[spaces.acme]"),
        "spaces.beta: must be a table ([spaces.beta]), got 5",
    ),
    (
        "no spaces at all",
        RELAY,
        "spaces: no Space is configured",
    ),
    (
        "proxy a host name",
        replace_line(RELAY + ACME, "trusted_proxies", 'trusted_proxies = ["localhost"]'),
        "relay.trusted_proxies[0]: must be an IP address or a CIDR network",
    ),
    (
        "proxy network with host bits",
        replace_line(RELAY + ACME, "trusted_proxies", 'trusted_proxies = ["10.0.0.1/8"]'),
        (
            "relay.trusted_proxies[0]: must be an IP address or a CIDR network"
            " (10.0.0.1/8 has host bits set)"
        ),
    ),
    (
        "trust-all mixed with addresses",
        replace_line(RELAY + ACME, "trusted_proxies", 'trusted_proxies = ["10.0.0.1", "*"]'),
        'relay.trusted_proxies[1]: "*" (trust every peer) must be the only entry',
    ),
    (
        "database an unknown URL",
        replace_line(RELAY + ACME, "database", 'database = "postgres://db/relay"'),
        'relay.database: must be a file path or a redis:// URL, got "postgres://db/relay"',
    ),
    (
        "database empty",
        replace_line(RELAY + ACME, "database", 'database = ""'),
        'relay.database: must be a non-empty string, got ""',
    ),
    (
        "secret key too short",
        replace_line(RELAY + ACME, "secret_keys", 'secret_keys = ["0123456789abcdef", "short"]'),
        "relay.secret_keys[1]: a secret key needs at least 16 characters, this one has 5",
    ),
    (
        "no secret keys",
        replace_line(RELAY + ACME, "secret_keys", "secret_keys = []"),
        "relay.secret_keys: at least one secret key is required (or set RELAY_SECRET_KEYS)",
    ),
    (
        "secret keys missing",
        replace_line(RELAY + ACME, "secret_keys", ""),
        "relay.secret_keys: at least one secret key is required",
    ),
    (
        "secret keys a string",
        replace_line(RELAY + ACME, "secret_keys", f'secret_keys = "{SECRET}"'),
        "relay.secret_keys: must be a list of strings",
    ),
    (
        "relay not a table",
        'relay = "x"\n' + ACME,
        'relay: must be a table, got "x"',
    ),
    (
        "syntax error with its line",
        RELAY + "[spaces.acme]\nactive = \n",
        "TOML syntax error: Invalid value (at line 8, column 10)",
    ),
]


@pytest.mark.parametrize(("text", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_each_problem_is_named(tmp_path: Path, text: str, expected: str) -> None:
    problems = problems_of(write(tmp_path, text))
    assert len(problems) == 1, problems
    assert problems[0].startswith(expected), problems[0]


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    text = (
        RELAY.replace("database", "databse").replace("65536", "0")
        + ACME.replace("1000", '"fast"').replace(KEY_HASH, "abc")
        + '[spaces.beta]\nsite_key = "pk_acme"\n'
    )
    problems = problems_of(write(tmp_path, text), {})

    assert [p.split(":")[0] for p in problems] == [
        "relay.databse",
        "relay.max_body_bytes",
        "spaces.acme.rate_limit_per_minute",
        "spaces.acme.upstream_rate_per_minute",
        "spaces.acme.api_keys[0].sha256",
        "spaces.acme.upstream_token_env",
        "spaces.beta.site_key",
    ]
    message = str(ConfigError(str(tmp_path / "relay.toml"), problems))
    assert message.startswith(f"{tmp_path / 'relay.toml'}: 7 configuration problem(s):")


def test_a_missing_file_is_one_problem(tmp_path: Path) -> None:
    problems = problems_of(str(tmp_path / "absent.toml"))
    assert problems == ["cannot read the file: it does not exist"]


def test_a_directory_is_one_problem(tmp_path: Path) -> None:
    assert problems_of(str(tmp_path)) == ["cannot read the file: it is a directory"]


def test_a_file_that_is_not_utf8_is_one_problem(tmp_path: Path) -> None:
    path = tmp_path / "latin1.toml"
    path.write_bytes(b'[relay]\ndatabase = "\xe9"\n')
    assert problems_of(str(path)) == ["cannot read the file: it is not UTF-8 text"]


def test_secrets_are_never_in_the_problems(tmp_path: Path) -> None:
    plaintext = keys.new_key()
    text = replace_line(RELAY + ACME, "secret_keys", 'secret_keys = ["sh0rt-secret"]')
    text = text.replace(KEY_HASH, plaintext)
    env = {**ENV, "ACME_COMETLY_TOKEN": "tok-acme-upstream-secret"}
    problems = problems_of(write(tmp_path, text), env)

    joined = "\n".join(problems)
    assert "spaces.acme.api_keys[0].sha256: holds a plaintext API key" in joined
    assert "relay.secret_keys[0]" in joined
    for secret in (plaintext, "sh0rt-secret", "tok-acme-upstream-secret"):
        assert secret not in joined


# --- the embedded default --------------------------------------------------------------------


def test_embedded_default_is_written_once_and_its_key_returned_once(tmp_path: Path) -> None:
    data = tmp_path / "comet-data"
    first, api_key = settings.embedded_default(str(data), {}, "127.0.0.1", 8123)

    path = data / "relay.toml"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert api_key is not None and api_key.startswith("crk_")
    assert api_key not in path.read_text()
    assert first.source == str(path)
    assert first.database == str(data / "relay.db")
    assert len(first.secret_keys) == 1 and len(first.secret_keys[0]) >= 32
    demo = first.spaces["demo"]
    assert list(first.spaces) == ["demo"]
    assert demo.api_keys == (settings.ApiKey(sha256=keys.hash_key(api_key)),)
    assert demo.site_key is not None and demo.site_key.startswith("pk_demo_")
    assert len(demo.site_key) > len("pk_demo_")
    assert demo.allowed_origins == ("http://localhost:8123", "http://127.0.0.1:8123")
    assert (demo.rate_limit_per_minute, demo.upstream_url, demo.active) == (1000, None, True)

    second, no_key = settings.embedded_default(str(data), {}, "127.0.0.1", 8123)
    assert no_key is None
    assert second == first


def test_embedded_defaults_differ_between_installations(tmp_path: Path) -> None:
    one, key_one = settings.embedded_default(str(tmp_path / "one"), {}, "127.0.0.1", 8000)
    two, key_two = settings.embedded_default(str(tmp_path / "two"), {}, "127.0.0.1", 8000)
    assert key_one != key_two
    assert one.secret_keys != two.secret_keys
    assert one.spaces["demo"].site_key != two.spaces["demo"].site_key


def test_embedded_default_keeps_an_edited_file(tmp_path: Path) -> None:
    path = write(tmp_path, RELAY + ACME)
    loaded, api_key = settings.embedded_default(str(tmp_path), ENV, "127.0.0.1", 8000)
    assert api_key is None
    assert list(loaded.spaces) == ["acme"]
    assert Path(path).read_text() == RELAY + ACME


def test_embedded_default_applies_env_overrides(tmp_path: Path) -> None:
    env = {"RELAY_SECRET_KEYS": "from-the-environment-1"}
    loaded, _ = settings.embedded_default(str(tmp_path / "d"), env, "127.0.0.1", 8000)
    assert loaded.secret_keys == ("from-the-environment-1",)


def test_embedded_default_that_cannot_be_written_is_a_config_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(ConfigError) as caught:
        settings.embedded_default(str(blocker / "data"), {}, "127.0.0.1", 8000)
    assert caught.value.problems[0].startswith("cannot create the default config:")


def test_data_dir_defaults_and_env_override() -> None:
    assert settings.default_data_dir({}) == "comet-data"
    assert settings.default_data_dir({"RELAY_DATA_DIR": "/srv/relay"}) == "/srv/relay"


# --- keys ------------------------------------------------------------------------------------


def test_keys_are_random_prefixed_and_hashed() -> None:
    one, two = keys.new_key(), keys.new_key()
    assert one != two and one.startswith("crk_") and len(one) == 4 + 43
    assert keys.hash_key("abc") == (
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    )


def test_toml_lines_load_as_a_key_of_the_space(tmp_path: Path) -> None:
    text = RELAY + "[spaces.beta]\n" + keys.toml_lines("beta", OTHER_HASH)
    loaded = settings.load(write(tmp_path, text), {})
    assert loaded.spaces["beta"].api_keys == (settings.ApiKey(sha256=OTHER_HASH),)
