"""Counting S3 requests by type: the classification of one request and the counter's tallies."""

from types import SimpleNamespace

from bench.s3_path import RequestCounter, classify, per_gib


def test_classify_path_style_and_virtual_host_requests():
    base = "http://127.0.0.1:9000/cbr-bench"
    assert classify("PUT", f"{base}/v/packs/ab/cd") == "PUT"
    assert classify("GET", f"{base}/v/packs/ab/cd") == "GET"
    assert classify("get", f"{base}/v/manifests/x") == "GET"
    assert classify("GET", f"{base}?list-type=2&prefix=v%2F") == "LIST"
    assert classify("GET", f"{base}") == "LIST"
    assert classify("HEAD", f"{base}/v/k") == "HEAD"
    assert classify("DELETE", f"{base}/v/k") == "DELETE"
    assert classify("POST", f"{base}?delete") == "POST"
    assert classify("GET", "https://cbr-bench.s3.us-east-1.amazonaws.com/v/k") == "GET"
    assert classify("GET", "https://cbr-bench.s3.us-east-1.amazonaws.com/?list-type=2") == "LIST"


class _Events:
    def __init__(self):
        self.handlers = {}

    def register(self, name, handler):
        self.handlers[name] = handler


def test_counter_tallies_each_sent_request_and_starts_over_on_take():
    client = SimpleNamespace(meta=SimpleNamespace(events=_Events()))
    counter = RequestCounter()
    counter.attach(client)
    send = client.meta.events.handlers["before-send.s3"]
    for method, url in (("PUT", "http://h/b/k1"), ("PUT", "http://h/b/k2"), ("GET", "http://h/b/k1"),
                        ("GET", "http://h/b?list-type=2")):
        assert send(request=SimpleNamespace(method=method, url=url), event_name="before-send.s3.PutObject") is None
    assert counter.take() == {"PUT": 2, "GET": 1, "LIST": 1}
    assert counter.take() == {}
    assert per_gib({"PUT": 32}, 1 << 29) == {"PUT": 64.0}
    assert per_gib({"PUT": 3}, 0) == {"PUT": None}
