"""Phone labels at the upstream's frame rate (formats and splits: downstream/phone_labels.py)."""

from downstream.phone_labels import PhoneDataConfig as DataConfig  # noqa: F401
from downstream.phone_labels import build_phone_frame_datasets as build_datasets  # noqa: F401
