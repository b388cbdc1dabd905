"""`ttgen up --demo` (so `./dev demo`) tells a person where the chat page is: the gateway's address."""

from __future__ import annotations

from pathlib import Path

from runtime.cluster.config import parse_config
from runtime.cluster.discovery import RunDirDiscovery
from runtime.services.base import Endpoint
from ttgen.commands.up import page_address
from ttgen.demo import DEMO_PASSWORD, join_hint, page_url


def test_the_hint_names_the_gateway_page_and_the_demo_login(tmp_path: Path) -> None:
    config = parse_config({"data_dir": str(tmp_path)})
    config.run_dir.mkdir(parents=True, exist_ok=True)
    assert page_url(config) == ""
    assert "chat page" not in join_hint(config, False)
    RunDirDiscovery(config.run_dir).publish(Endpoint("gateway", 0, "http", "0.0.0.0", 8473))
    assert page_url(config) == "http://127.0.0.1:8473/"
    hint = join_hint(config, False)
    assert "open the chat page in a browser: http://127.0.0.1:8473/" in hint
    assert f"password {DEMO_PASSWORD}" in hint


def test_page_address_of_the_gateway_endpoint() -> None:
    assert page_address([Endpoint("msg", 0, "client", "127.0.0.1", 8000)]) == ""
    assert page_address([Endpoint("gateway", 0, "http", "10.1.2.3", 8400)]) == "http://10.1.2.3:8400/"
    assert page_address([Endpoint("gateway", 0, "http", "::1", 8400)]) == "http://[::1]:8400/"
