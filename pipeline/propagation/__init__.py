"""Curvature propagation (002): geometric shadows in coupling maps and skip-connection synthesis."""
