"""One server interceptor for every call shape: authenticate, authorize, check the request, map errors."""
from __future__ import annotations

import inspect
import logging

import grpc

from cbr_common import auth
from cbr_common.echo import capped
from cbr_common.errors import CbrError
from cbr_common.grpc_errors import status_for
from cbr_common.request_validation import check_request, lenient_deserializer

log = logging.getLogger("cbr.rpc")

_HANDLER_FACTORIES = {  # a handler's attribute for its call shape -> the factory that builds one like it
    "unary_unary": grpc.unary_unary_rpc_method_handler,
    "unary_stream": grpc.unary_stream_rpc_method_handler,
    "stream_unary": grpc.stream_unary_rpc_method_handler,
    "stream_stream": grpc.stream_stream_rpc_method_handler,
}


def rewrapped(handler, wrap, request_deserializer=None):
    """A handler like `handler` (call shape, serializers) whose behaviour is wrap(behaviour, kind), kind its call
    shape ("unary_unary", ...): the one way the project's interceptors wrap a method."""
    for kind, factory in _HANDLER_FACTORIES.items():
        behavior = getattr(handler, kind)
        if behavior is not None:
            return factory(wrap(behavior, kind),
                           request_deserializer=request_deserializer or handler.request_deserializer,
                           response_serializer=handler.response_serializer)
    return handler


class WrappedHandlers:
    """Each method's wrapped handler, made on its first call and reused: an interceptor used to build closures
    and a handler per call. Keyed by method and checked against the handler it wrapped (the one below, itself
    the same object call after call), so only registered methods are held: the set stays bounded."""

    def __init__(self):
        self._by_method: dict[str, tuple[object, object]] = {}

    def get(self, method: str, handler, wrap):
        held = self._by_method.get(method)
        if held is None or held[0] is not handler:
            held = (handler, wrap(handler, method))
            self._by_method[method] = held
        return held[1]


class CallGuard(grpc.aio.ServerInterceptor):
    """Wraps each handler so checks and error mapping run in the handler's own task, streams included.

    Public methods (health, reflection) skip authentication but get the same request checks."""

    def __init__(self, authenticator: auth.Authenticator):
        self._auth = authenticator
        self._handlers = WrappedHandlers()

    async def intercept_service(self, continuation, details):
        handler = await continuation(details)
        if handler is None:
            return handler
        return self._handlers.get(details.method, handler, self._wrap_handler)

    def _wrap_handler(self, handler, method: str):
        def wrap(behavior, kind: str):
            by_shape = self._wrap_stream if kind.endswith("_stream") else self._wrap_unary
            return by_shape(behavior, method, streams_requests=kind.startswith("stream_"))
        return rewrapped(handler, wrap, lenient_deserializer(handler.request_deserializer))

    async def _prepare(self, context: grpc.aio.ServicerContext, method: str) -> None:
        """What authentication must wait for off the event loop (an OIDC provider's keys), done before _enter."""
        if not auth.is_public(method):
            await self._auth.prepare(context.invocation_metadata())

    def _enter(self, request, context: grpc.aio.ServicerContext, method: str, streams_requests: bool):
        """Authenticates and authorizes the caller, then returns the request checked (or, for a request stream,
        an iterator that checks each message as the handler reads it)."""
        if not auth.is_public(method):
            principal = self._auth.principal_from_metadata(context.invocation_metadata())
            auth.set_principal(principal)  # before the role check: the audit trail names who was refused
            self._auth.authorize(principal, method)
        name = auth.split_method(method)[1]
        if streams_requests:
            return _checked_stream(request, name)
        check_request(request, name)
        return request

    def _wrap_unary(self, behavior, method, streams_requests):
        async def guarded(request, context):
            try:
                await self._prepare(context, method)
                request = self._enter(request, context, method, streams_requests)
                result = behavior(request, context)
                return await result if inspect.isawaitable(result) else result
            except Exception as exc:  # noqa: BLE001 - every error leaves through the one table
                await _abort(context, exc, method)
        return guarded

    def _wrap_stream(self, behavior, method, streams_requests):
        async def guarded(request, context):
            try:
                await self._prepare(context, method)
                request = self._enter(request, context, method, streams_requests)
                result = behavior(request, context)
                if hasattr(result, "__aiter__"):
                    async for item in result:
                        yield item
                elif inspect.isawaitable(result):
                    await result  # a handler that writes with context.write()
                else:
                    for item in result:
                        yield item
            except Exception as exc:  # noqa: BLE001
                await _abort(context, exc, method)
        return guarded


async def _checked_stream(requests, method_name: str):
    """The request stream, each message checked as it is read (handlers read it by iterating, not context.read)."""
    async for request in requests:
        check_request(request, method_name)
        yield request


async def _abort(context: grpc.aio.ServicerContext, exc: Exception, method: str) -> None:
    if isinstance(exc, grpc.aio.AbortError):
        raise exc
    if isinstance(exc, (CbrError, NotImplementedError)):
        log.info("call refused", extra={"fields": {"method": method, "error": type(exc).__name__,
                                                   "cbr_code": getattr(exc, "cbr_code", None),
                                                   "detail": capped(str(exc))}})
    else:
        log.exception("call failed", extra={"fields": {"method": method}})
    await context.abort_with_status(status_for(exc))
