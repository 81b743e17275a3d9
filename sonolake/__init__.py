"""Sonolake package."""
