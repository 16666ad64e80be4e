"""Prompt artifacts (a few kilobytes each) and the versioned registry that stores them."""
