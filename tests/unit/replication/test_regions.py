"""The region directory: what CBR_REGIONS_FILE may say, and the settings error for each mistake."""
import json

import pytest

from cbr_common.settings import SettingsError
from cbr_common.regions import load_regions, parse_regions


def peer(name="region-b", **fields):
    return {"name": name, "transfer_addr": "127.0.0.1:7443", "tls_ca": "/etc/cbr/ca.pem",
            "credential_file": "/etc/cbr/b.token", **fields}


def parse(raw, local="region-a"):
    return parse_regions(json.dumps(raw), local)


def refused(raw, local="region-a") -> str:
    with pytest.raises(SettingsError) as caught:
        parse(raw, local)
    return str(caught.value)


def test_peers_are_read_and_sorted():
    directory = parse({"peers": [peer("region-c"), peer("region-b", transfer_addr="b.example:9000")]})
    assert directory.local == "region-a"
    assert directory.destinations == ["region-b", "region-c"]
    b = directory.peer("region-b")
    assert (b.transfer_addr, b.tls_ca, b.credential_file, b.plaintext) == (
        "b.example:9000", "/etc/cbr/ca.pem", "/etc/cbr/b.token", False)
    assert directory.peer("region-x") is None


def test_no_file_means_no_peers():
    assert load_regions("", "local").destinations == []
    assert parse({}).destinations == []


def test_plaintext_only_with_the_dev_switch():
    message = refused({"peers": [peer(tls_ca="")]})
    assert "region-b" in message and "tls_ca" in message and "dev_plaintext" in message
    directory = parse({"dev_plaintext": True, "peers": [peer(tls_ca="")]})
    assert directory.peer("region-b").plaintext and directory.dev_plaintext


def test_unknown_fields_are_refused():
    assert "unknown field region" in refused({"region": "region-a", "peers": []})
    assert "peers[0]: unknown field token" in refused({"peers": [peer(token="x")]})


def test_a_region_listed_twice_is_refused():
    assert "'region-b' is listed twice" in refused({"peers": [peer(), peer(transfer_addr="other:1")]})


def test_the_local_region_is_not_its_own_peer():
    assert "this region itself" in refused({"peers": [peer("region-a")]})


@pytest.mark.parametrize("entry, words", [
    ({"name": "region-b", "tls_ca": "/ca"}, "missing transfer_addr, credential_file"),
    (peer(transfer_addr="no-port"), "must be host:port"),
    (peer(transfer_addr="host:70000"), "must be host:port"),
    (peer(name="Region_B"), "not a region name"),
    (peer(tls_ca=5), "tls_ca must be a string"),
    ("region-b", "must be an object"),
])
def test_bad_peer_entries(entry, words):
    assert words in refused({"peers": [entry]})


@pytest.mark.parametrize("text, words", [
    ("{", "not valid JSON"),
    ("[]", "must be a JSON object"),
    ('{"peers": {}}', "peers must be a list"),
    ('{"dev_plaintext": "yes"}', "dev_plaintext must be true or false"),
])
def test_bad_documents(text, words):
    with pytest.raises(SettingsError, match=words):
        parse_regions(text, "region-a")


def test_a_bad_local_name_is_refused():
    with pytest.raises(SettingsError, match="CBR_REGION"):
        parse_regions("{}", "Region A")


def test_load_names_the_file_and_checks_the_files_it_names(tmp_path):
    path = tmp_path / "regions.json"
    with pytest.raises(SettingsError, match="cannot read"):
        load_regions(str(path), "region-a")
    token = tmp_path / "b.token"
    path.write_text(json.dumps({"peers": [peer(credential_file=str(token), tls_ca=str(tmp_path / "ca.pem"))]}))
    with pytest.raises(SettingsError, match=f"{path}: region-b's tls_ca .* is not a file"):
        load_regions(str(path), "region-a")
    (tmp_path / "ca.pem").write_text("PEM")
    with pytest.raises(SettingsError, match="credential_file"):
        load_regions(str(path), "region-a")
    token.write_text("token")
    assert load_regions(str(path), "region-a").destinations == ["region-b"]


def test_pace_and_slots_are_read_with_their_defaults():
    directory = parse({"peers": [peer("region-b", rate_limit_mbps=2.5, max_concurrent=1), peer("region-c")]})
    b, c = directory.peer("region-b"), directory.peer("region-c")
    assert (b.rate_limit_mbps, b.max_concurrent) == (2.5, 1)
    assert (c.rate_limit_mbps, c.max_concurrent) == (0.0, 2)
    assert parse({"peers": [peer(rate_limit_mbps=0)]}).peer("region-b").rate_limit_mbps == 0.0


@pytest.mark.parametrize("value", [-1, "10", True, None, [1]])
def test_a_bad_rate_limit_is_refused_naming_the_entry(value):
    message = refused({"peers": [peer(rate_limit_mbps=value)]})
    assert "peers[0] (region-b): rate_limit_mbps" in message


@pytest.mark.parametrize("value", [0, -2, 1.5, "2", False])
def test_a_bad_max_concurrent_is_refused_naming_the_entry(value):
    message = refused({"peers": [peer(max_concurrent=value)]})
    assert "peers[0] (region-b): max_concurrent" in message


def test_an_infinite_rate_limit_is_refused():
    text = '{"peers": [{"name": "region-b", "transfer_addr": "h:1", "tls_ca": "/c", "credential_file": "/t", ' \
           '"rate_limit_mbps": Infinity}]}'
    with pytest.raises(SettingsError, match="rate_limit_mbps"):
        parse_regions(text, "region-a")
