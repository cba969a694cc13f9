"""Corpora: the audio index (lengths and unusable files, cached), LibriSpeech / VoxCeleb1 /
Speech Commands readers, their split protocols, transcripts, 10 ms frame labels and the import
of forced alignments. Used by pretraining and probing alike; it knows nothing of either."""
