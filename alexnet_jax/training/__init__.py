"""A run: its loop (train.py) and the modules it stands on at the top level; what a run keeps
on disk, its processes and what it records in the rooms checkpoints/, processes/ and records/
(docs/architecture.md draws the floors)."""
