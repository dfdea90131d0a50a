"""Resuming interrupted jobs: finished stages of `prune` (`stages`), the answers of `eval` (`answers`),
and, in one place, the keys that say which inputs each saved result belongs to (`keys`)."""

from shortlvlm.resume.stages import StageCache, partial_dir_for

__all__ = ["StageCache", "partial_dir_for"]
