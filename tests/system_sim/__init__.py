"""System simulation of the real broker and clients (issue 13)."""
