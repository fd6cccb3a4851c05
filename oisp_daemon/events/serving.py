"""Exchanges a process serves (an AI gateway, a LiteLLM proxy) and the provider calls it makes
for them.

When `capture.tls_servers` names a process, the requests it receives over TLS are decoded like
any client's (pipeline.py reads its connection the other way round). While such an inbound
request is open, an outbound AI call from the same process was made to serve it: the outbound
ai.request points back to the inbound one (`related_events`, caused_by) and says which request
it served. With several inbound requests open at once, the latest is taken: a gateway's own
bookkeeping is not visible from outside.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Any, Dict, List, Optional, Tuple

EXCHANGE_SIDE_ATTR = "exchange_side"
SERVED_REQUEST_ATTR = "served_request_id"
MAX_OPEN_PER_PID = 256  # inbound requests remembered per process (a stuck one cannot pile up)
MAX_PIDS = 4096


class ServingLinks:
    """Open inbound requests by pid; bounded."""

    def __init__(self) -> None:
        # pid -> {inbound event_id: request_id}, oldest first
        self._open: "OrderedDict[int, OrderedDict[str, str]]" = OrderedDict()

    def inbound(self, pid: int, event: Dict[str, Any]) -> None:
        """An inbound ai.request: mark it, and keep it open until its response."""
        event.setdefault("attrs", {})[EXCHANGE_SIDE_ATTR] = "server"
        open_ = self._open.setdefault(pid, OrderedDict())
        self._open.move_to_end(pid)
        open_[event["event_id"]] = event["data"]["request_id"]
        while len(open_) > MAX_OPEN_PER_PID:
            open_.popitem(last=False)
        while len(self._open) > MAX_PIDS:
            self._open.popitem(last=False)

    def answered(self, pid: int, request_event_id: str, response_event: Dict[str, Any]) -> None:
        """The inbound request's response: mark it and close the request."""
        response_event.setdefault("attrs", {})[EXCHANGE_SIDE_ATTR] = "server"
        open_ = self._open.get(pid)
        if open_ is not None:
            open_.pop(request_event_id, None)
            if not open_:
                del self._open[pid]

    def outbound(self, pid: int, event: Dict[str, Any]) -> Optional[Tuple[str, str]]:
        """A provider call: linked to the process's latest open inbound request, if any.
        Returns (inbound event_id, inbound request_id) when linked."""
        open_ = self._open.get(pid)
        if not open_:
            return None
        event_id, request_id = next(reversed(open_.items()))
        related: List[Dict[str, str]] = event.setdefault("related_events", [])
        related.append({"event_id": event_id, "relationship": "caused_by"})
        event.setdefault("attrs", {})[SERVED_REQUEST_ATTR] = request_id
        return event_id, request_id

    def forget(self, pid: int) -> None:
        self._open.pop(pid, None)
