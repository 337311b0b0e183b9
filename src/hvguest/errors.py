"""The error tree every layer raises; nothing else is raised on purpose.

``WireError`` is the peer's fault (bytes from the kernel that do not decode),
``ChannelError`` is ours (the sans-IO channel used out of order), and
``OperationFailed`` carries the Hyper-V status that belongs in the reply.
"""

from __future__ import annotations

from hvguest.abi.constants import HvStatus


class HvError(Exception):
    """Base of every error hvguest raises on purpose."""


class WireError(HvError):
    """Bytes from the kernel do not decode (size, unknown op, bad text).

    ``status`` is what the reply to the malformed message should carry.
    """

    def __init__(self, message: str, status: HvStatus = HvStatus.E_FAIL) -> None:
        super().__init__(message)
        self.status = status


class ChannelError(HvError):
    """The channel state machine was driven out of order (a local bug)."""


class OperationFailed(HvError):
    """A request failed; ``status`` is the HvStatus to put in the reply."""

    def __init__(self, status: HvStatus, message: str) -> None:
        super().__init__(message)
        self.status = status


class ConfigError(HvError):
    """The configuration file is invalid; the message names the key."""
