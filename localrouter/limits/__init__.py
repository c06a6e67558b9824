"""Limits and budgets per client (`limits:`, `clients[].limits`, `clients[].model_limits`):
requests and tokens per minute, dollars per day and month, calls in flight; checked before
each call with its expected cost reserved, settled from its real usage after; counted in
Redis across a fleet, else in this daemon."""
