"""The sealed evidence report of one request: its audit entries with inclusion
proofs, its signatures' validation, sealed by the service. It reads the audit
log, the request and the signed file, so it sits above all three."""
