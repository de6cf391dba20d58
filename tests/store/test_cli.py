"""`cloche db upgrade` and `cloche db version` end to end, as an operator runs them
(`python -m cloche.cli`, a real process), on both engines."""

from __future__ import annotations

import json
import subprocess

from cloche.store import migrations
from cloche.store.connect import open_engine
from tests.cli_zygote import run_cli


def cloche(*args: str) -> subprocess.CompletedProcess[str]:
    return run_cli(["db", *args], text=True, timeout=60)


def version(url: str) -> int:
    done = cloche("version", "--database-url", url, "--json")
    assert done.returncode == 0, done.stderr
    return int(json.loads(done.stdout)["version"])


def test_upgrade_applies_each_migration_once_with_progress(database_url: str) -> None:
    dry = cloche("upgrade", "--database-url", database_url, "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert [line.split()[0] for line in dry.stdout.splitlines()[1:]] == [str(m.version) for m in migrations.MIGRATIONS]
    assert "dry run" in dry.stderr
    first = cloche("upgrade", "--database-url", database_url)
    assert first.returncode == 0, first.stderr
    for m in migrations.MIGRATIONS:
        assert f"{m.version} {m.description}: applied" in first.stderr
    assert version(database_url) == migrations.LATEST
    again = cloche("upgrade", "--database-url", database_url)
    assert again.returncode == 0 and f"up to date at schema version {migrations.LATEST}" in again.stderr
    assert "applied" not in again.stderr


def test_dry_run_changes_nothing(engine: str, database_url: str) -> None:
    assert cloche("upgrade", "--database-url", database_url, "--dry-run").returncode == 0
    if engine == "sqlite":
        assert "no database" in cloche("version", "--database-url", database_url).stderr
    else:
        assert version(database_url) == 0


def test_a_newer_database_is_an_error(database_url: str) -> None:
    assert cloche("upgrade", "--database-url", database_url).returncode == 0
    db = open_engine(database_url)
    try:
        db.run("INSERT INTO schema_version VALUES (?, 'from the future', 0)", (migrations.LATEST + 1,))
    finally:
        db.close()
    done = cloche("upgrade", "--database-url", database_url)
    assert done.returncode == 1
    assert f"schema version {migrations.LATEST + 1}, newer than this cloche knows" in done.stderr
    shown = json.loads(cloche("version", "--database-url", database_url, "--json").stdout)
    assert shown["version"] == migrations.LATEST + 1 and shown["pending"] == []


def test_an_unknown_kind_of_database_is_a_clean_error() -> None:
    done = cloche("version", "--database-url", "mysql://nowhere/db")
    assert done.returncode == 1 and "sqlite:///PATH or postgresql://" in done.stderr
