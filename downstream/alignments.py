"""``python -m downstream.alignments``, the name earlier releases documented: runs
``python -m corpora.alignments`` (forced alignments -> 10 ms ``frames.txt``)."""

from corpora.alignments import run

if __name__ == "__main__":
    run()
