"""Atari data: action names, preprocessing, collection and the datasets built on it."""
