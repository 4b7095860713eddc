"""Tests of the IES sandbox servers, over real HTTP on port 0."""
