"""Phone labels at the upstream's frame rate (formats and splits: corpora/phone_splits.py)."""

from corpora.phone_splits import PhoneDataConfig as DataConfig  # noqa: F401
from downstream.phone_datasets import build_phone_frame_datasets as build_datasets  # noqa: F401
