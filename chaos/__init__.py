"""Toxiproxy-driven fault injection, workloads, histories and checkers (built in a later issue)."""
