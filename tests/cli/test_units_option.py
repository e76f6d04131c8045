"""`mechscope explain --units`: SITE:U,U-U lists (the shared number parser) and unit queries."""

from __future__ import annotations

import pytest

from mechscope.cli.explain import parse_units
from mechscope.errors import InputError


class Store:
    sites = ("blocks.0.mlp.post", "blocks.1.mlp.post")

    def find_units(self, query: str) -> list[tuple[str, int]]:
        return [("blocks.1.mlp.post", 342)] if query == "L1 N342" else []

    def n_units(self, site: str) -> int:
        return 4


def test_ranges_queries_and_samples() -> None:
    got = parse_units(Store(), ["blocks.0.mlp.post:0-2,3", "L1 N342", "blocks.0.mlp.post:1"], 0, 0)
    assert got == [("blocks.0.mlp.post", u) for u in range(4)] + [("blocks.1.mlp.post", 342)]
    sampled = parse_units(Store(), ["blocks.0.mlp.post:0"], 2, seed=1)
    assert len(sampled) == 3 and sampled[0] == ("blocks.0.mlp.post", 0)


@pytest.mark.parametrize(
    "spec", ["blocks.0.mlp.post:5-", "blocks.0.mlp.post:x", "blocks.0.mlp.post:"]
)
def test_bad_numbers_name_the_spec(spec: str) -> None:
    with pytest.raises(InputError, match="numbers or ranges"):
        parse_units(Store(), [spec], 0, 0)


def test_an_unknown_query_says_what_is_valid() -> None:
    with pytest.raises(InputError, match="SITE:U,U-U"):
        parse_units(Store(), ["L9 N9"], 0, 0)


def test_floats_parse_lists_and_name_the_option() -> None:
    from mechscope.cli.options import floats

    assert floats("0,-0.5, 2,", "--coeffs") == [0.0, -0.5, 2.0]
    with pytest.raises(InputError, match="--coeffs takes numbers separated by commas, got '1,x'"):
        floats("1,x", "--coeffs")
