"""pytest plugin: fixtures for an embedded odradek broker (filled in by the testing room)."""
