"""Local rehearsal tools: simulators used to exercise the orchestrator without real infrastructure."""
