"""docs/configuration.md is generated from the settings classes and must not go stale."""

from pathlib import Path

from sensorpipe_tools.config_reference import field_comments, render_reference

ROOT = Path(__file__).resolve().parent.parent


def test_configuration_page_equals_a_fresh_rendering():
    committed = (ROOT / "docs/configuration.md").read_text()
    assert committed == render_reference(), (
        "docs/configuration.md is stale: .venv/bin/sensorpipe config-reference > "
        "docs/configuration.md"
    )


def test_every_field_of_every_section_is_on_the_page():
    import dataclasses
    import typing

    from sensorpipe.config import DeploySettings, HealthSettings, Settings

    page = render_reference()

    def walk(cls, prefix=""):
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if dataclasses.is_dataclass(hints[f.name]):
                yield from walk(hints[f.name], f"{prefix}{f.name}.")
            else:
                yield f"{prefix}{f.name}"

    for cls in (Settings, HealthSettings, DeploySettings):
        for name in walk(cls):
            assert f"| `{name}` |" in page, name


def test_comments_above_a_field_become_its_meaning():
    from sensorpipe.config import SparkSettings

    comments = field_comments(SparkSettings)
    assert comments["master"].startswith("local[N] for laptop runs")
    assert comments["shuffle_partitions"] == ""
