"""Frozen data and enums shared by every layer."""
