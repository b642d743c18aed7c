"""How the simulated FreeSWITCH world behaves: prompt lengths, missing prompts, how dialled
parties answer, timings. Given to :class:`.simulator.FreeswitchSimulator`; read by its calls."""

from __future__ import annotations

from dataclasses import dataclass, field

EndpointMode = str  # "answer" | "busy" | "no_answer" | "fail"
FALLBACK_PROMPT = "ivr/ivr-call_cannot_be_completed_as_dialed.wav"


@dataclass
class Behaviour:
    """How the simulated world behaves: prompt lengths, endpoints, timings."""

    prompt_seconds: float = 0.3  # default length of any prompt
    durations: dict[str, float] = field(default_factory=dict)  # "file:ivr/welcome" -> seconds
    missing: set[str] = field(default_factory=set)  # prompts that fail with FILE NOT FOUND
    endpoints: dict[str, EndpointMode] = field(default_factory=dict)  # dial target -> mode
    default_endpoint: EndpointMode = "answer"
    ring_seconds: float = 0.05
    talk_seconds: float = 0.2  # how long an answering party talks before hanging up
    talk: dict[str, float] = field(default_factory=dict)  # per dial target, overrides it
    no_answer_seconds: float = 0.2
    transfer_seconds: float = 0.05
    linger_seconds: float = 10.0
    connect_timeout: float = 2.0
    fallback_prompt: str = FALLBACK_PROMPT

    def duration(self, prompt: str) -> float:
        if prompt in self.durations:
            return self.durations[prompt]
        if prompt.startswith("silence:"):
            return int(prompt.removeprefix("silence:") or "0") / 1000
        return self.prompt_seconds
