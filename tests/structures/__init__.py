"""Tests for segtron.structures."""
