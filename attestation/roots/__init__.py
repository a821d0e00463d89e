"""Trust anchors shipped as package data; see SOURCES.md for where each came from."""
