"""The heads tasks share: frame-level and utterance-level classifiers, CTC, and their layers.
Every task folder builds its expert from these (or its own code), never from another task folder."""
