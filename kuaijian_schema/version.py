"""The software version, from the installed distribution's metadata (pyproject.toml's `version`).

Does: `software_version()` — what gateway status, the cloud's OpenAPI document and `kuaijian --version`
report, read once with `importlib.metadata` (so the number lives in pyproject.toml alone).

Does not: import any package of the project (gateway and cloud used to import it from the CLI package).
"""

from __future__ import annotations

import functools
from importlib.metadata import PackageNotFoundError, version

DISTRIBUTION = "kuaijian"


@functools.cache
def software_version() -> str:
    """The installed kuaijian version, or "unknown" when running from a tree that was never installed."""
    try:
        return version(DISTRIBUTION)
    except PackageNotFoundError:
        return "unknown"
