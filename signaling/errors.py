"""Errors that become `error` messages to the client."""

from __future__ import annotations


class ProtocolError(Exception):
    """A client request the server rejects; `code` is a protocol error code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
