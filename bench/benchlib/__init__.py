"""Shared parts of the benchmark scripts: processes and /proc readings, wrk, targets, reports."""
