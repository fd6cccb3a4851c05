"""Raw finish reasons from every family map to OISP's enum; unknown values are `other`."""
from __future__ import annotations

import pytest

from oisp_daemon.events.finish_reason import normalise_finish_reason


@pytest.mark.parametrize("raw,oisp", [
    ("stop", "stop"), ("eos", "stop"), ("eos_token", "stop"), ("end_turn", "stop"), ("STOP", "stop"),
    ("COMPLETE", "stop"), ("FINISH", "stop"), ("length", "length"), ("MAX_TOKENS", "length"),
    ("model_length", "length"), ("tool_use", "tool_calls"), ("TOOL_CALL", "tool_calls"),
    ("SAFETY", "content_filter"), ("guardrail_intervened", "content_filter"),
    ("insufficient_system_resource", "error"), ("1", "other"),
    ("incomplete:max_output_tokens", "length"), ("something_new", "other"),
])
def test_raw_reasons_map_to_the_oisp_enum(raw, oisp):
    assert normalise_finish_reason(raw) == oisp


def test_a_completed_response_that_called_tools_stopped_for_them():
    assert normalise_finish_reason("completed", has_tool_calls=True) == "tool_calls"
    assert normalise_finish_reason(None) is None and normalise_finish_reason("") is None
