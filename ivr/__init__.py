"""Callyard's pure IVR and call-flow core: no engine library, no I/O."""
