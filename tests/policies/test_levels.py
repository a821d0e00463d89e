import pytest

from policies import ACR_HIGH, ACR_LOW, ACR_SUBSTANTIAL, Level, known_levels, parse_acr


def test_levels_are_ordered_low_substantial_high_eidas_2015_1502():
    assert Level.LOW < Level.SUBSTANTIAL < Level.HIGH
    assert max(Level.LOW, Level.HIGH, Level.SUBSTANTIAL) is Level.HIGH


@pytest.mark.parametrize(
    ("acr", "level"),
    [
        pytest.param(ACR_LOW, Level.LOW, id="low"),
        pytest.param(ACR_SUBSTANTIAL, Level.SUBSTANTIAL, id="substantial"),
        pytest.param(ACR_HIGH, Level.HIGH, id="high"),
        pytest.param("http://eidas.europa.eu/LoA/HIGH", None, id="unknown/case-sensitive"),
        pytest.param("urn:mace:incommon:iap:silver", None, id="unknown/foreign-acr"),
        pytest.param("", None, id="unknown/empty"),
    ],
)
def test_parse_acr_knows_exactly_the_eidas_uris(acr, level):
    assert parse_acr(acr) is level
    if level is not None:
        assert level.acr == acr


def test_known_levels_keep_order_and_drop_unknown():
    assert known_levels(("urn:x", ACR_HIGH, ACR_LOW)) == (Level.HIGH, Level.LOW)


def test_level_label_is_lower_case_name():
    assert Level.SUBSTANTIAL.label == "substantial"
