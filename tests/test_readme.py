"""The README stays true: quickstart has exactly the two set-up commands, every setting is documented."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from shironzi.settings import Settings

README_PATH = Path(__file__).resolve().parent.parent / "README.md"
README = README_PATH.read_text()


def test_quickstart_has_exactly_two_setup_commands() -> None:
    quickstart = README.split("## Quickstart", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```bash\n(.*?)```", quickstart, re.S)
    assert block
    commands = [ln.split("#")[0].strip() for ln in block.group(1).splitlines() if ln.strip()]
    assert commands == ["make demo", "make test"]


def test_every_setting_is_in_the_configuration_table() -> None:
    table = README.split("## Configuration", 1)[1].split("\n## ", 1)[0]
    for name, field in Settings.model_fields.items():
        env = f"SHIRONZI_{name.upper()}"
        aliases = getattr(field.validation_alias, "choices", None)
        if aliases:
            env = aliases[0]
        assert f"`{env}`" in table, f"{env} missing from the README configuration table"


def test_one_section_per_audience_and_a_mermaid_diagram() -> None:
    for section in ("For data engineers", "For analysts", "For app developers", "For compliance officers"):
        assert f"## {section}" in README
    assert "```mermaid" in README


def test_production_section_names_each_server_with_the_value_compose_and_k8s_use() -> None:
    """The Production table says which settings point at which server, with the values of docker-compose.yml (the
    k8s ConfigMap holds the same ones, tests/deploy/test_k8s.py), so the README cannot drift from the deployments."""
    production = README.split("\n## Production", 1)[1].split("\n## ", 1)[0]
    compose = yaml.safe_load((README_PATH.parent / "docker-compose.yml").read_text())["x-shironzi-env"]
    rows = [line.split(" | ") for line in production.splitlines() if line.startswith("| ") and "`" in line]
    for setting in (
        "SHIRONZI_DATABASE_URL", "SHIRONZI_LAKE_URI", "SHIRONZI_SECRETS_URL", "MLFLOW_TRACKING_URI",
        "SHIRONZI_SPARK_REMOTE", "SHIRONZI_KAFKA_BOOTSTRAP", "SHIRONZI_REDIS_URL", "SHIRONZI_ONLINE_STORE_URL",
    ):
        value = re.sub(r"\$\{[^}]*\}", "…", compose[setting])
        (row,) = [r for r in rows if f"`{setting}`" in r[2]]
        assert f"`{value}`" in row[3], f"README Production: {setting} is {value!r} in docker-compose.yml"
    assert "moto" in production and "AWS S3, MinIO and R2" in production
    assert "AWS_S3_ALLOW_UNSAFE_RENAME" in production and "never" in production
    for how in ("### With Docker Compose", "### With Kubernetes (kustomize)", "### The processes by hand"):
        assert how in production
