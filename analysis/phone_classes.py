"""Broad phonetic classes of the 40 ARPAbet phone labels (data/demo/phones.txt, stress removed)."""

from __future__ import annotations

BROAD_CLASSES: dict[str, tuple[str, ...]] = {
    "silence": ("sil",),
    "vowels": ("aa", "ae", "ah", "ao", "eh", "er", "ih", "iy", "uh", "uw"),
    "diphthongs": ("aw", "ay", "ey", "ow", "oy"),
    "stops": ("b", "d", "g", "k", "p", "t"),
    "affricates": ("ch", "jh"),
    "fricatives": ("dh", "f", "hh", "s", "sh", "th", "v", "z", "zh"),
    "nasals": ("m", "n", "ng"),
    "liquids and glides": ("l", "r", "w", "y"),
}
PHONE_TO_BROAD = {phone: broad for broad, phones in BROAD_CLASSES.items() for phone in phones}


def broad_class_names(phone_names: list[str]) -> list[str]:
    """The broad class of each phone name; raises naming any phone the table lacks."""
    unknown = [name for name in phone_names if name.lower() not in PHONE_TO_BROAD]
    if unknown:
        raise ValueError(f"no broad class for phone(s) {unknown}; add them to BROAD_CLASSES in {__name__}")
    return [PHONE_TO_BROAD[name.lower()] for name in phone_names]
