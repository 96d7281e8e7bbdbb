"""Titan: a lightweight distributed job orchestrator."""
