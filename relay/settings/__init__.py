"""Frozen settings, built once from relay.toml and RELAY_* environment variables.

`load` reads a relay.toml (`load.py`, value by value with `checks.py`), `embedded_default`
writes and reads the one `serve` starts with when given none (`first_run.py`); the result is a
`Settings` (`model.py`) passed to whatever needs it.
"""

from relay.settings.first_run import default_data_dir, embedded_default
from relay.settings.load import load
from relay.settings.model import (
    CONFIG_NAME,
    DEFAULT_DATA_DIR,
    DEFAULT_UPSTREAM_URL,
    MIN_SECRET_KEY_LENGTH,
    RESERVED_PATHS,
    SPACE_ID,
    TRACK_PATH,
    ApiKey,
    Settings,
    Space,
    is_redis_url,
)

__all__ = [
    "CONFIG_NAME",
    "DEFAULT_DATA_DIR",
    "DEFAULT_UPSTREAM_URL",
    "MIN_SECRET_KEY_LENGTH",
    "RESERVED_PATHS",
    "SPACE_ID",
    "TRACK_PATH",
    "ApiKey",
    "Settings",
    "Space",
    "default_data_dir",
    "embedded_default",
    "is_redis_url",
    "load",
]
