"""Reading the ingestor's TOML config for the sampler: sources, defaults, overlaps, checkpoint names."""

from __future__ import annotations

from pathlib import Path

import pytest

from ingestor.templates import Template
from sampler.config import Config, ConfigError, check_state_dir, could_nest, read
from sampler.streams import checkpoint_name


def _read(tmp_path: Path, body: str) -> Config:
    cfg = tmp_path / "c.toml"
    cfg.write_text(body.replace("ROOT", str(tmp_path)))
    return read(cfg, cwd=tmp_path)


def test_sources_with_top_level_defaults_and_ingestor_keys_ignored(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text(
        f"""
state_path = "{tmp_path}/state/ledger.sqlite"
samples = "{tmp_path}/samples/{{vendor}}/{{dataset}}"
scan_interval = 5.0
[[source]]
name = "sp"
path = "{tmp_path}/data/{{vendor}}/{{dataset}}/raw"
include = ["env*/**"]
mode = "stability"
layout = "{{yyyy}}/{{name}}"
[[source]]
name = "acme"
path = "rel/acme"
samples = "~/acme-samples"
[sampler]
rows = 5
state-dir = "/var/lib/s"
"""
    )
    c = read(cfg, cwd=tmp_path)
    sp, acme = c.sources
    assert sp.name == "sp" and sp.path is not None and sp.path.names == ("vendor", "dataset")
    assert sp.warehouse.text == f"{tmp_path}/data/{{vendor}}/{{dataset}}/warehouse"  # beside the path
    assert sp.manifests.text == f"{tmp_path}/data/{{vendor}}/{{dataset}}/manifests"
    assert sp.samples.text == f"{tmp_path}/samples/{{vendor}}/{{dataset}}"  # the top-level default
    assert acme.path is not None and acme.path.text == f"{tmp_path}/rel/acme"  # from the working dir
    assert acme.samples.text == str(Path("~/acme-samples").expanduser())
    assert acme.warehouse.text == f"{tmp_path}/rel/warehouse"
    assert c.state_dir == tmp_path / "state" / "sampler"
    assert c.sampler == {"rows": 5, "state_dir": "/var/lib/s"}


def test_ingestor_table_and_a_file_without_sources(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text('[ingestor]\ninput = "land"\nsamples = "s/{x}"\n[sampler]\nrows = 1\n')
    c = read(cfg, cwd=tmp_path)
    (only,) = c.sources
    assert only.name == "default"
    assert only.manifests.head == tmp_path / "manifests" and only.manifests.literal
    assert only.samples.literal and only.samples.head == tmp_path / "s" / "{x}"  # plain paths: braces literal
    assert c.state_dir == tmp_path / "state" / "sampler"
    assert c.sampler == {"rows": 1}
    cfg.write_text(f'manifests = "{tmp_path}/m"\n')
    (only,) = read(cfg, cwd=tmp_path).sources
    assert only.path is None and only.warehouse.head == tmp_path / "warehouse"


@pytest.mark.parametrize(
    ("inner", "outer", "nests"),
    [
        ("/d/{v}/{d}/samples", "/d/{v}/{d}/manifests", False),
        ("/d/{v}/{d}/manifests/s", "/d/{v}/{d}/manifests", True),
        ("/d/sp/x/manifests", "/d/{v}/{d}/manifests", True),
        ("/d/sp/x/other", "/d/{v}/{d}/manifests", False),
        ("/d/v1/m", "/d/v{n}/m", True),
        ("/d/x1/m", "/d/v{n}/m", False),
        ("/d/{a}", "/d/{a}/m", False),  # shorter: cannot be inside
        ("/e/{a}/m", "/d/{a}", False),
    ],
)
def test_could_nest(inner: str, outer: str, nests: bool) -> None:
    assert could_nest(Template.parse(inner), Template.parse(outer)) is nests


def test_state_dir_inside_a_manifests_dir_is_refused(tmp_path: Path) -> None:
    sources = _read(
        tmp_path, 'state_path = "ROOT/l.db"\n[[source]]\nname = "s"\npath = "ROOT/d/{v}/raw"\n'
    ).sources
    check_state_dir(sources, tmp_path / "state")
    with pytest.raises(ConfigError, match="could lie inside source 's': manifests"):
        check_state_dir(sources, tmp_path / "d" / "sp" / "manifests" / "st")


def test_checkpoint_name_is_readable_and_tells_dirs_apart() -> None:
    a = checkpoint_name(Path("/srv/data/sp/gics/1.0/manifests"))
    b = checkpoint_name(Path("/srv/other/sp/gics/1.0/manifests"))
    assert a.startswith("sp-gics-1.0-manifests.") and a.endswith(".json")
    assert b.startswith("sp-gics-1.0-manifests.") and a != b
    odd = checkpoint_name(Path("/x/.hidden/na me/\udcff/m"))
    assert "/" not in odd and not odd.startswith(".") and " " not in odd
    assert len(checkpoint_name(Path("/" + "/".join(["n" * 200] * 4)))) < 255
