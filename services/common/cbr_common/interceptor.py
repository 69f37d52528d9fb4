"""One server interceptor for every call shape: authenticate, authorize, scope to the project, map errors."""
from __future__ import annotations

import inspect
import logging

import grpc

from cbr_common import auth
from cbr_common.errors import CbrError
from cbr_common.grpc_errors import status_for

log = logging.getLogger("cbr.rpc")


class CallGuard(grpc.aio.ServerInterceptor):
    """Wraps each handler so checks and error mapping run in the handler's own task, streams included."""

    def __init__(self, authenticator: auth.Authenticator):
        self._auth = authenticator

    async def intercept_service(self, continuation, details):
        handler = await continuation(details)
        if handler is None or auth.is_public(details.method):
            return handler
        method = details.method
        if handler.unary_unary:
            return grpc.unary_unary_rpc_method_handler(
                self._wrap_unary(handler.unary_unary, method),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer)
        if handler.stream_unary:
            return grpc.stream_unary_rpc_method_handler(
                self._wrap_unary(handler.stream_unary, method),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer)
        if handler.unary_stream:
            return grpc.unary_stream_rpc_method_handler(
                self._wrap_stream(handler.unary_stream, method),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer)
        return grpc.stream_stream_rpc_method_handler(
            self._wrap_stream(handler.stream_stream, method),
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer)

    def _enter(self, context: grpc.aio.ServicerContext, method: str) -> None:
        principal = self._auth.principal_from_metadata(context.invocation_metadata())
        self._auth.authorize(principal, method)
        auth.set_principal(principal)

    def _wrap_unary(self, behavior, method):
        async def guarded(request, context):
            try:
                self._enter(context, method)
                result = behavior(request, context)
                return await result if inspect.isawaitable(result) else result
            except Exception as exc:  # noqa: BLE001 - every error leaves through the one table
                await _abort(context, exc, method)
        return guarded

    def _wrap_stream(self, behavior, method):
        async def guarded(request, context):
            try:
                self._enter(context, method)
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


async def _abort(context: grpc.aio.ServicerContext, exc: Exception, method: str) -> None:
    if isinstance(exc, grpc.aio.AbortError):
        raise exc
    if isinstance(exc, (CbrError, NotImplementedError)):
        log.info("call refused", extra={"fields": {"method": method, "error": type(exc).__name__,
                                                   "cbr_code": getattr(exc, "cbr_code", None),
                                                   "detail": str(exc)}})
    else:
        log.exception("call failed", extra={"fields": {"method": method}})
    await context.abort_with_status(status_for(exc))
