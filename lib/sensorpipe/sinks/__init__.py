"""Sinks: the lake (raw events and quarantine); warehouse and alerts have their own issues."""
