"""The registry's hot standby on real PostgreSQL: pg_basebackup -R, reads on the standby, promotion, writes."""

from __future__ import annotations

import json
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from shironzi.dr.registry_standby import build_standby, promote, replication_status, start_standby, wait_for_catch_up
from shironzi.errors import InvalidInputError, InvalidStateError, ServiceUnavailableError
from shironzi.settings import get_settings
from shironzi.tenancy import TenantContext, get_registry, reset_registries
from tests._services import PostgresCluster, free_port, postgres_cluster
from tests.shironzi.cli._fixtures import run_cli

ADMIN = TenantContext.admin(actor="ops@platform", purpose="dr")


@pytest.fixture
def primary() -> Iterator[PostgresCluster]:
    """A primary of its own (the default config streams: wal_level=replica, replication allowed locally)."""
    with postgres_cluster() as cluster:
        yield cluster


@pytest.fixture
def standby_base(primary: PostgresCluster) -> Iterator[Path]:
    base = Path(tempfile.mkdtemp(prefix="shironzi-standby-"))
    os.chmod(base, 0o755)
    (base / "sock").mkdir()
    if primary.prefix:
        user = pwd.getpwnam(primary.prefix[2])
        for path in (base, base / "sock"):
            os.chown(path, user.pw_uid, user.pw_gid)
    yield base
    subprocess.run([*primary.prefix, primary.pg_ctl, "-D", str(base / "data"), "-m", "immediate", "stop"],
                   capture_output=True, check=False)
    shutil.rmtree(base, ignore_errors=True)


def _use_registry(url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHIRONZI_DATABASE_URL", url)
    get_settings.cache_clear()
    reset_registries()


@pytest.mark.integration
def test_standby_serves_reads_then_takes_writes_after_promotion(
    home: Path, primary: PostgresCluster, standby_base: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    _use_registry(primary.url, monkeypatch)
    get_registry().init_schema()
    data = standby_base / "data"
    build_standby(primary.url, data, run_as=primary.prefix)
    assert (data / "standby.signal").exists()
    standby = start_standby(primary.url, data, port=free_port(), socket_dir=standby_base / "sock",
                            log=standby_base / "standby.log", run_as=primary.prefix)

    made = [get_registry().provision_tenant(ADMIN, slug=f"shop-{i}", name=f"Shop {i}", industry="ecommerce")[0]
            for i in range(3)]
    status = wait_for_catch_up(primary.url, standby)
    assert status.standby_in_recovery is True and status.lag_bytes == 0
    assert [r.state for r in status.replicas] == ["streaming"]

    _use_registry(standby, monkeypatch)  # the Shironzi registry pointed at the standby: reads work
    rows, total = get_registry().list_tenants()
    assert total == 3 and {t.id for t in rows} == {t.id for t in made}
    assert get_registry().get_tenant("shop-1").id == made[1].id
    with pytest.raises(ServiceUnavailableError, match="read-only hot standby"):
        get_registry().provision_tenant(ADMIN, slug="too-early", name="Early", industry="ecommerce")

    result = run_cli(capsys, "dr", "registry-standby", "status", "--standby", standby, "--primary", primary.url,
                     "--json")
    assert result.code == 0 and json.loads(result.stdout)["standby_in_recovery"] is True

    result = run_cli(capsys, "dr", "registry-standby", "promote", "--standby", standby)
    assert result.code == 0 and "promoted" in result.stdout
    assert replication_status(None, standby).standby_in_recovery is False
    reset_registries()
    tenant, _ = get_registry().provision_tenant(ADMIN, slug="after-failover", name="After", industry="ecommerce")
    assert get_registry().get_tenant("after-failover").id == tenant.id and get_registry().list_tenants()[1] == 4

    result = run_cli(capsys, "dr", "registry-standby", "promote", "--standby", standby)
    assert result.code == 1 and "not a standby" in result.stderr  # a second promotion: one clear line
    with pytest.raises(InvalidStateError):
        promote(standby)


def test_bad_standby_input_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match="PostgreSQL"):
        build_standby("sqlite:///registry.db", tmp_path / "data")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "PG_VERSION").write_text("16")
    with pytest.raises(InvalidInputError, match="PostgreSQL"):
        replication_status("sqlite:///registry.db", None)
    with pytest.raises(InvalidInputError, match="PostgreSQL"):
        promote("sqlite:///registry.db")
    with pytest.raises(InvalidInputError, match="not empty"):
        build_standby("postgresql+psycopg://u@127.0.0.1:1/postgres", tmp_path / "data")
