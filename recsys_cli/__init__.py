"""The `recsys` command: the top floor, above every package it drives (DESIGN.md §2)."""
