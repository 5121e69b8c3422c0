"""The questions a seller asks of cleanup, each a named pair of evaluation variants.

A variant is ``query/catalog`` (``search.evaluate``); every scenario compares one
variant with the ``raw/raw`` baseline on the same photos:

* ``shop-search``: shoppers search the shop with their own raw photos; the shop
  cleans its listings or not (raw/raw vs raw/clean). Shoppers never clean their photos.
* ``catalog-match``: the seller's photo, raw or cleaned, is matched against a
  marketplace's catalog of studio shots that is already clean (raw/raw vs clean/raw;
  the grocery iconic-image set is this case).
* ``normalised-index``: the search engine cleans every photo, queries and listings
  alike (raw/raw vs clean/clean).

``--variants`` still adds any other variant to a run; the scenario's variant gives
the verdict, and the verdict line opens with the scenario's question.
"""
from __future__ import annotations

from dataclasses import dataclass

BASELINE = "raw/raw"


@dataclass(frozen=True)
class Scenario:
    name: str
    variant: str  # compared with raw/raw
    title: str  # short name in words
    question: str  # what the seller asks, in words
    setup: str  # who cleans what


SCENARIOS: dict[str, Scenario] = {
    "shop-search": Scenario(
        "shop-search", "raw/clean", "Shop search",
        "Do shoppers' own photos find the right product more often when the shop's listings are cleaned?",
        "shoppers' raw photos searched against the shop's listings, as given vs cleaned"),
    "catalog-match": Scenario(
        "catalog-match", "clean/raw", "Catalog match",
        "Does cleaning your photo help match it to the right item of a marketplace's catalog?",
        "the seller's photo, as given vs cleaned, matched against the catalog as given"),
    "normalised-index": Scenario(
        "normalised-index", "clean/clean", "Normalised index",
        "If the search engine cleans every photo, queries and listings alike, does it find the right "
        "product more often?",
        "every photo cleaned, queries and listings, vs every photo as given"),
}
SCENARIO_NAMES = tuple(SCENARIOS)


def get(name: str) -> Scenario:
    """The scenario called ``name``, or ValueError listing the known ones."""
    try:
        return SCENARIOS[name]
    except KeyError:
        raise ValueError(f"unknown scenario {name!r}; known: {', '.join(SCENARIOS)}") from None


def variants_for(scenario: str, extra=None) -> list[str]:
    """raw/raw, the scenario's variant, then any ``extra`` variants (duplicates dropped, order kept)."""
    s = get(scenario)
    return list(dict.fromkeys([BASELINE, s.variant, *(v.strip() for v in (extra or []) if v.strip())]))


def cleans(scenario: str) -> tuple[bool, bool]:
    """(queries cleaned, catalog cleaned) in the scenario's variant."""
    q, c = get(scenario).variant.split("/")
    return q != "raw", c != "raw"
