"""Session-scoped real Label Studio server for tests (not a conftest: import the fixture explicitly).

    from tests.labelstudio_fixtures import label_studio  # noqa: F401  (pytest fixture)

The migrated template data dir is cached in ``<repo>/.cache/label-studio-template`` (gitignored): the
first run builds it (~30 s), later runs start a server from a copy in a few seconds.
"""

from __future__ import annotations

import dataclasses
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from alignloop.annotation.server import (
    DEFAULT_PASSWORD,
    DEFAULT_USERNAME,
    LabelStudioServer,
    ensure_template,
    find_label_studio_executable,
    start_server,
    stop_server,
)

REPO_ROOT = Path(__file__).resolve().parent.parent
TEMPLATE_DIR = REPO_ROOT / ".cache" / "label-studio-template"
SKIP_REASON = "Label Studio server not installed (.venv-ls missing; run bash scripts/setup-label-studio)"


@dataclasses.dataclass(frozen=True)
class LabelStudioTestServer:
    server: LabelStudioServer
    token: str = dataclasses.field(repr=False)
    username: str = DEFAULT_USERNAME
    password: str = dataclasses.field(default=DEFAULT_PASSWORD, repr=False)

    @property
    def url(self) -> str:
        return self.server.url


def require_label_studio() -> None:
    if find_label_studio_executable() is None:
        pytest.skip(SKIP_REASON)


@pytest.fixture(scope="session")
def label_studio_template() -> Path:
    require_label_studio()
    return ensure_template(TEMPLATE_DIR)


@pytest.fixture(scope="session")
def label_studio(
    label_studio_template: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LabelStudioTestServer]:
    """A running server (admin user + random legacy API token) for the whole test session."""
    token = secrets.token_hex(20)
    data_dir = tmp_path_factory.mktemp("label-studio-data")
    server = start_server(data_dir, token=token, template_dir=label_studio_template)
    try:
        yield LabelStudioTestServer(server=server, token=token)
    finally:
        stop_server(server)
