"""The request log (`request_log:`): the usage ledger's per-request records as a log to read
(`/api/requests`, its live stream, `localrouter requests`), with the bodies it keeps when
asked to, redacted, cut at a cap and compressed."""
