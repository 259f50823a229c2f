"""Shared fixtures for the bitrix_images test suite (owned by the core team; add fixtures locally)."""
