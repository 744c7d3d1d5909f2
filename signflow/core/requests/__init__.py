"""Signature requests: the state machine, who is on call, the rota, and the
single-use activation that binds a signature to the bytes shown."""
