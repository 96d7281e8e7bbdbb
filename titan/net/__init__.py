"""asyncio adapters for TITAN_PROTO: a framed peer and the handshake."""

from __future__ import annotations

from .handshake import HandshakeGate, dial, prove
from .peer import FrameHandler, Peer

__all__ = ["FrameHandler", "HandshakeGate", "Peer", "dial", "prove"]
