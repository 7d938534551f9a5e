"""The README stays true: quickstart has exactly the two set-up commands, every setting is documented."""

from __future__ import annotations

import re
from pathlib import Path

from shironzi.settings import Settings

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()


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
