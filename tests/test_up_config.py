"""`corridor up`'s file: the controller's tables plus [up] and [agent], each read by its own
reader and every error naming its field."""

from __future__ import annotations

from pathlib import Path

import pytest

from corridor import up
from corridor.common.config import ConfigError
from corridor.controller import config as controller_config

DOCUMENT = {
    "listen": {"unix": "c.sock"},
    "up": {"node": "edge1"},
    "agent": {"listen": {"unix": "a.sock"}, "ports": [{"name": "eth1"}]},
}


def test_an_up_file_gives_the_controller_the_agent_and_the_node(tmp_path: Path) -> None:
    config = up.parse(DOCUMENT, base=tmp_path)
    assert config.node == "edge1"
    assert config.controller.listen.unix == tmp_path / "c.sock"
    assert config.agent.listen.unix == tmp_path / "a.sock"
    assert [p.name for p in config.agent.ports] == ["eth1"]
    # The controller alone reads the same file and leaves the up tables to corridor up.
    assert controller_config.parse(DOCUMENT, base=tmp_path) == config.controller


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"agent": None}, "agent: is required; expected a table"),
        ({"agent": {"listen": {"unix": "a.sock"}, "bogus": 1}}, "agent.bogus: unknown key"),
        ({"agent": {"listen": {"unix": "a.sock"}, "workers": 0}}, "agent.workers: 0 is not"),
        ({"up": {"node": "no spaces"}}, "up.node: 'no spaces' is not a node name"),
        ({"up": {"node": "x", "extra": 1}}, "up.extra: unknown key"),
        ({"bogus": 1}, "bogus: unknown key"),
    ],
)
def test_a_bad_up_file_names_the_field(change: dict[str, object], message: str) -> None:
    document = {**DOCUMENT, **change}
    document = {k: v for k, v in document.items() if v is not None}
    with pytest.raises(ConfigError) as e:
        up.parse(document)
    assert str(e.value).startswith(message), str(e.value)


def test_an_up_file_takes_the_fpm_feed_of_its_node(tmp_path: Path) -> None:
    document = {**DOCUMENT, "fpm": [{"node": "edge1", "netns": "router", "stale_seconds": 30}]}
    config = up.parse(document, base=tmp_path)
    (fpm,) = config.controller.fpm
    assert (fpm.node, fpm.netns, fpm.stale_seconds) == ("edge1", "router", 30.0)
    assert (fpm.listen.host, fpm.listen.port) == ("127.0.0.1", 2620)
    with pytest.raises(ConfigError) as e:
        up.parse({**DOCUMENT, "fpm": [{"node": "edge1", "listen": "0.0.0.0:2620"}]})
    assert "fpm[0].allowed_peers: is required" in str(e.value)
