"""Benchmarks: small programs that measure what the design promises."""
