"""The [relay] keys of the browser side: defaults, values, and every problem named."""

from __future__ import annotations

from pathlib import Path

import pytest

from relay import settings
from relay.errors import ConfigError

BASE = """\
[relay]
secret_keys = ["0123456789abcdef-secret"]
{extra}

[spaces.acme]
site_key = "pk_acme"
allowed_origins = ["https://acme.example"]
"""


def load(tmp_path: Path, extra: str) -> settings.Settings:
    path = tmp_path / "relay.toml"
    path.write_text(BASE.format(extra=extra))
    return settings.load(str(path), {})


def problems(tmp_path: Path, extra: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, extra)
    return caught.value.problems


def test_defaults(tmp_path: Path) -> None:
    loaded = load(tmp_path, "")
    assert loaded.snippet_path == "/comet.js"
    assert loaded.snippet_aliases == ()
    assert loaded.collect_path == "/e"
    assert loaded.cookie_name == "_comet"
    assert loaded.cookie_domain is None
    assert loaded.browser_rate_limit_per_minute == 600
    assert loaded.max_batch_events == 50
    assert loaded.demo is False


def test_every_key_is_read(tmp_path: Path) -> None:
    loaded = load(
        tmp_path,
        """\
snippet_path = "/static/t.js"
snippet_aliases = ["/assets/app-7.js", "/a/b.js"]
collect_path = "/relay/collect"
cookie_name = "__shop_v"
cookie_domain = ".Shop.Example"
browser_rate_limit_per_minute = 120
max_batch_events = 20
""",
    )
    assert loaded.snippet_path == "/static/t.js"
    assert loaded.snippet_aliases == ("/assets/app-7.js", "/a/b.js")
    assert loaded.collect_path == "/relay/collect"
    assert loaded.cookie_name == "__shop_v"
    assert loaded.cookie_domain == ".shop.example"
    assert (loaded.browser_rate_limit_per_minute, loaded.max_batch_events) == (120, 20)


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ('snippet_path = "comet.js"', "relay.snippet_path: must be a path"),
        ('snippet_path = "/"', "relay.snippet_path: must be a path"),
        ('collect_path = "/e?x=1"', "relay.collect_path: must be a path"),
        ('collect_path = "/my path"', "relay.collect_path: must be a path"),
        ("collect_path = 5", "relay.collect_path: must be a path"),
        ('snippet_aliases = "/a.js"', "relay.snippet_aliases: must be a list"),
        ('snippet_aliases = ["/a.js", "b.js"]', "relay.snippet_aliases[1]: must be a path"),
        ('cookie_name = "my cookie"', "relay.cookie_name: must be a cookie name"),
        ('cookie_name = "a=b"', "relay.cookie_name: must be a cookie name"),
        ('cookie_name = ""', "relay.cookie_name: must be a cookie name"),
        ('cookie_domain = "https://shop.example"', "relay.cookie_domain: must be a domain name"),
        ('cookie_domain = "shop..example"', "relay.cookie_domain: must be a domain name"),
        ("browser_rate_limit_per_minute = 0", "relay.browser_rate_limit_per_minute: must be a"),
        ("max_batch_events = -1", "relay.max_batch_events: must be a positive integer"),
        ("max_batch_events = true", "relay.max_batch_events: must be a positive integer"),
        ('colect_path = "/e"', 'relay.colect_path: unknown key; did you mean "collect_path"?'),
    ],
)
def test_bad_values_are_named(tmp_path: Path, extra: str, expected: str) -> None:
    found = problems(tmp_path, extra)
    assert len(found) == 1 and found[0].startswith(expected), found


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (
            'collect_path = "/comet.js"',
            'relay.collect_path: "/comet.js" is already the path of relay.snippet_path',
        ),
        (
            'snippet_aliases = ["/x.js", "/x.js"]',
            'relay.snippet_aliases[1]: "/x.js" is already the path of relay.snippet_aliases[0]',
        ),
        (
            'snippet_aliases = ["/e"]',
            'relay.collect_path: "/e" is already the path of relay.snippet_aliases[0]',
        ),
        ('collect_path = "/healthz"', 'relay.collect_path: "/healthz" is already the path of the'),
        (
            'snippet_path = "/public-api/v1/events/track"',
            'relay.snippet_path: "/public-api/v1/events/track" is already the path of the Create',
        ),
        ('snippet_path = "/demo"', 'relay.snippet_path: "/demo" is already the path of the demo'),
        (
            'snippet_aliases = ["/comet-stub.js"]',
            (
                'relay.snippet_aliases[0]: "/comet-stub.js" is already the path of '
                "relay.snippet_path's stub"
            ),
        ),
    ],
)
def test_paths_must_not_collide(tmp_path: Path, extra: str, expected: str) -> None:
    found = problems(tmp_path, extra)
    assert len(found) == 1 and found[0].startswith(expected), found


def test_the_embedded_default_serves_the_demo(tmp_path: Path) -> None:
    loaded, _ = settings.embedded_default(str(tmp_path / "d"), {}, "127.0.0.1", 8123)
    assert loaded.demo is True
    assert (loaded.snippet_path, loaded.collect_path) == ("/comet.js", "/e")
    assert "http://127.0.0.1:8123" in loaded.spaces["demo"].allowed_origins
