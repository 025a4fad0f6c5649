"""reid/config.py: YAML loading, overrides, one-line errors with did-you-mean, path expansion."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from reid.config import Config, expand_path, load_config, resolve_paths, save_config
from reid.errors import ConfigError

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_shipped_config_loads(path: Path) -> None:
    cfg = load_config(path)
    assert isinstance(cfg, Config)
    assert cfg.data.batch_size % cfg.data.num_instances == 0


def test_overrides_are_parsed_to_the_field_type() -> None:
    cfg = load_config(None, ["gds.weight=0.25", "adapt.rounds=3", "gds.hard=false", "cluster.eps=0.6",
                             "pretrain.milestones=[5, 9]", "model.arch=resnet18"])
    assert cfg.gds.weight == 0.25 and isinstance(cfg.gds.weight, float)
    assert cfg.adapt.rounds == 3 and cfg.gds.hard is False and cfg.cluster.eps == 0.6
    assert cfg.pretrain.milestones == [5, 9] and cfg.model.arch == "resnet18"


def test_int_given_for_float_field_is_accepted_as_float() -> None:
    assert load_config(None, ["gds.weight=1"]).gds.weight == 1.0


@pytest.mark.parametrize("override, message", [
    ("gds.weigth=1", "unknown key 'gds.weigth' (did you mean 'gds.weight'?)"),
    ("cluster.epss=0.5", "unknown key 'cluster.epss' (did you mean 'cluster.eps'?)"),
    ("gdss.weight=1", "unknown key 'gdss' (did you mean 'gds'?)"),
    ("data.batch_size=-4", "data.batch_size: expected a value >= 2, got -4"),
    ("data.batch_size=30", "data.batch_size=30 must be a multiple of data.num_instances=4"),
    ("data.batch_size=abc", "data.batch_size: expected int, got 'abc'"),
    ("model.arch=resnet5", "(did you mean 'resnet50'?)"),
    ("cluster.eps=0", "cluster.eps: expected 'auto' or a number in (0, 1), got 0"),
    ("cluster.eps=-0.3", "cluster.eps: expected 'auto' or a number in (0, 1), got -0.3"),
    ("gds.momentum=1.5", "gds.momentum: expected a value in [0, 1], got 1.5"),
    ("gds.hard=3", "gds.hard: expected bool, got 3"),
    ("pretrain.milestones=[9, 5]", "pretrain.milestones: expected increasing epochs"),
])
def test_bad_values_raise_one_line_config_errors(override: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(None, [override])
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_errors_name_the_yaml_file(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("data:\n  hieght: 128\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: unknown key 'data.hieght' \(did you mean 'data.height'\?\)"):
        load_config(path)


def test_invalid_yaml_and_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("data: [1, 2\n")
    with pytest.raises(ConfigError, match="broken.yaml: not valid YAML at line"):
        load_config(path)
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")


def test_yaml_is_read_safely_no_python_objects(tmp_path: Path) -> None:
    path = tmp_path / "evil.yaml"
    path.write_text("seed: !!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(path)


def test_resolved_config_round_trips(tmp_path: Path) -> None:
    cfg = load_config(None, ["gds.kappa=2.5", "cluster.eps=0.55"])
    save_config(cfg, tmp_path / "config.yaml")
    assert yaml.safe_load((tmp_path / "config.yaml").read_text())["gds"]["kappa"] == 2.5
    assert load_config(tmp_path / "config.yaml") == cfg


def test_paths_expand_environment_variables_without_a_shell(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REID_TEST_ROOT", "/data/x")
    monkeypatch.delenv("REID_TEST_UNSET", raising=False)
    assert expand_path("${REID_TEST_ROOT}/market") == "/data/x/market"
    assert expand_path("${REID_TEST_UNSET:-fallback}/a") == "fallback/a"
    assert expand_path("$(rm -rf /)") == "$(rm -rf /)"  # no command substitution
    with pytest.raises(ConfigError, match="REID_TEST_UNSET"):
        expand_path("${REID_TEST_UNSET}/a")
    cfg = resolve_paths(load_config(None, ["data.source_root=${REID_TEST_ROOT}/m"]))
    assert cfg.data.source_root == "/data/x/m"


def test_a_top_level_that_is_not_a_mapping_names_the_file_once(tmp_path: Path) -> None:
    path = tmp_path / "x.yaml"
    path.write_text("- data\n- model\n")
    with pytest.raises(ConfigError) as raised:
        load_config(path)
    assert str(raised.value) == f"{path}: expected a mapping at the top level, got list"
