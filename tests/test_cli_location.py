"""A local read finds the store where ``Settings`` would: options, environment, file."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydantic import ValidationError

from jobhost.cli.common import CliState
from jobhost.cli.location import StoreLocation, Unusual, store_location
from jobhost.config import Settings

OPTIONS = [(None, None), (Path("opt-data"), None), (None, "sqlite:////tmp/opt.db")]
ENVIRONMENTS = [
    {},
    {"JOBHOST_DATA_DIR": "env-data"},
    {"jobhost_database_url": "postgresql://db/jobs"},  # Settings ignores the case
    {"JOBHOST_DATABASE_URL": ""},  # empty: the SQLite file in the data dir
]
FILES = [None, 'data_dir = "file-data"\n', 'database_url = "sqlite:////tmp/file.db"\nport = 1\n']


@pytest.fixture(autouse=True)
def _clean(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in [n for n in os.environ if n.lower().startswith("jobhost_")]:
        monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


def _settings(data_dir: Path | None, database_url: str | None) -> Settings:
    given: dict[str, object] = {}
    if data_dir is not None:
        given["data_dir"] = data_dir
    if database_url is not None:
        given["database_url"] = database_url
    return Settings(**given)  # type: ignore[arg-type]


@pytest.mark.parametrize("options", OPTIONS)
@pytest.mark.parametrize("environment", ENVIRONMENTS)
@pytest.mark.parametrize("file", FILES)
def test_the_store_is_where_settings_puts_it(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    options: tuple[Path | None, str | None],
    environment: dict[str, str],
    file: str | None,
) -> None:
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    if file is not None:
        (tmp_path / "jobhost.toml").write_text(file)

    found = store_location(*options)
    settings = _settings(*options)

    assert (found.data_dir, found.db_url) == (settings.data_dir, settings.db_url)


def test_jobhost_config_names_the_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / "other.toml").write_text('data_dir = "from-other"\n')
    monkeypatch.setenv("JOBHOST_CONFIG", str(tmp_path / "other.toml"))

    assert store_location(None, None) == StoreLocation(Path("from-other"), None)
    assert Settings().data_dir == Path("from-other")


@pytest.mark.parametrize("file", ["data_dir = 5\n", "DATA_DIR = 'x'\n", "data_dir = \n"])
def test_what_only_settings_can_read_is_left_to_it(tmp_path: Path, file: str) -> None:
    (tmp_path / "jobhost.toml").write_text(file)

    with pytest.raises(Unusual):
        store_location(None, None)


def test_the_cli_asks_settings_then_and_fails_as_before(tmp_path: Path) -> None:
    (tmp_path / "jobhost.toml").write_text("data_dir = 5\n")

    with pytest.raises(ValidationError, match="data_dir"):
        CliState().store()
