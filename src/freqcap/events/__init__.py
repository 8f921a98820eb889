"""The raw event contract (DESIGN.md) and readers for event directories."""
