"""Interceptors wrap a method's handler once and reuse it, and wrap again when the handler below changes."""
from __future__ import annotations

import grpc

from cbr_common.interceptor import WrappedHandlers


def test_a_methods_handler_is_wrapped_once_and_again_when_it_changes():
    made = []

    def wrap(handler, method):
        made.append(method)
        return ("wrapped", handler, method)

    handlers = WrappedHandlers()
    first = grpc.unary_unary_rpc_method_handler(lambda request, context: None)
    a = handlers.get("/s.S/A", first, wrap)
    assert handlers.get("/s.S/A", first, wrap) is a
    assert made == ["/s.S/A"]
    b = handlers.get("/s.S/B", first, wrap)
    assert b == ("wrapped", first, "/s.S/B") and made == ["/s.S/A", "/s.S/B"]
    replaced = grpc.unary_unary_rpc_method_handler(lambda request, context: None)
    assert handlers.get("/s.S/A", replaced, wrap) == ("wrapped", replaced, "/s.S/A")
    assert made == ["/s.S/A", "/s.S/B", "/s.S/A"]
