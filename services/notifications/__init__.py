"""Test package root (pytest module names must be unique across services)."""
