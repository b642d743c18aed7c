"""Agents in the browser: a LiveKit room per call, tokens for it, and the SIP address
engines bridge the caller to (see :mod:`appserver.agents.sip` and :mod:`.rooms`)."""
