import json

import pytest

from dip_core.model.config import NETS, ConfigError, SkipConfig, check_size, load_config, min_size


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"channels_down": ()}, "at least one scale"),
        ({"channels_up": (128, 128)}, "same length"),
        ({"channels_skip": (4, 4, 4, -1, 4)}, ">= 0"),
        ({"channels_down": (128, 0, 128, 128, 128)}, "positive"),
        ({"filter_size_down": 4}, "odd"),
        ({"filter_skip_size": 0}, "odd"),
        ({"pad": "circular"}, "pad must be one of"),
        ({"upsample": "bicubic"}, "upsample must be one of"),
        ({"downsample": "lanczos9"}, "downsample must be one of"),
        ({"act": "relu6"}, "act must be one of"),
        ({"in_channels": 0}, "positive"),
    ],
)
def test_bad_configs_are_rejected_with_a_clear_message(changes, message):
    with pytest.raises(ConfigError, match=message):
        SkipConfig(**changes)


def test_strings_and_lists_are_coerced():
    cfg = SkipConfig(channels_down=[8, 8], channels_up=[8, 8], channels_skip=[0, 2], pad="zero", act="Swish")
    assert cfg.channels_down == (8, 8) and cfg.pad.value == "zero" and cfg.act.value == "Swish"


def test_config_round_trips_through_json(tmp_path):
    cfg = NETS["jpeg"]
    path = tmp_path / "net.json"
    path.write_text(json.dumps(cfg.to_dict()))
    assert load_config(path) == cfg


@pytest.mark.parametrize(
    "content, message",
    [("{not json", "cannot read"), ("[1, 2]", "JSON object"), ('{"depth": 3}', "unknown network setting")],
)
def test_bad_config_files(tmp_path, content, message):
    path = tmp_path / "net.json"
    path.write_text(content)
    with pytest.raises(ConfigError, match=message):
        load_config(path)


def test_unknown_names_and_missing_files():
    with pytest.raises(ConfigError, match="unknown network"):
        load_config("nope")
    with pytest.raises(ConfigError, match="not found"):
        load_config("/no/such/net.json")


def test_min_size_matches_the_depth():
    assert min_size(NETS["default"]) == 33  # 5 halvings must leave 2 pixels
    assert min_size(NETS["tiny"]) == 5
    check_size(NETS["default"], 33, 40)
    with pytest.raises(ConfigError, match="too small"):
        check_size(NETS["default"], 32, 64)
