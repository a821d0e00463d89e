from datetime import UTC, datetime

import pytest

from idp.eid import errors
from idp.eid.connector import EidRequest, EidResponse
from idp.eid.simulator import SimulatorConnector
from policies import Level

KEY = b"k" * 32


def simulator(**kw):
    args = {
        "enabled": True,
        "page_url": "https://cityid.example/eid/simulator",
        "pseudonym_key": KEY,
        "sector": "musterstadt",
    }
    args.update(kw)
    return SimulatorConnector(**args)


@pytest.mark.parametrize("enabled", [False, None, "true", 1], ids=["false", "none", "string", "int"])
def test_simulator_refuses_to_exist_unless_explicitly_enabled(enabled):
    with pytest.raises(errors.SimulatorDisabled):
        simulator(enabled=enabled)


def test_short_pseudonym_key_is_refused():
    with pytest.raises(ValueError):
        simulator(pseudonym_key=b"short")


def test_simulated_result_is_flagged_as_simulation():
    sim = simulator(clock=lambda: datetime(2026, 11, 24, tzinfo=UTC))
    start = sim.start(EidRequest(Level.HIGH))
    assert start.method == "GET" and "state=" in start.url and "level=high" in start.url
    result = sim.finish(EidResponse({"state": start.pending.relay_state, "persona": "erika"}, start.pending))
    assert result.simulation is True
    assert result.level is Level.HIGH and result.acr == Level.HIGH.acr
    assert result.attribute("family_name").value == "Mustermann"
    assert result.attribute("family_name").source == "urn:cityid:eid:simulator"
    again = sim.finish(EidResponse({"state": start.pending.relay_state, "persona": "erika"}, start.pending))
    assert again.pseudonym == result.pseudonym  # stable per sector
    other_sector = simulator(sector="elsewhere").finish(
        EidResponse({"state": start.pending.relay_state, "persona": "erika"}, start.pending)
    )
    assert other_sector.pseudonym != result.pseudonym


@pytest.mark.parametrize(
    ("params", "error"),
    [
        pytest.param({"state": "x", "persona": "erika"}, errors.StateMismatch, id="fail/state"),
        pytest.param({"persona": "mallory"}, errors.MalformedResponse, id="fail/persona"),
        pytest.param({"persona": "max", "level": "substantial"}, errors.LevelTooLow, id="fail/too-low"),
        pytest.param({"persona": "max", "level": "ultra"}, errors.LevelUnknown, id="fail/level"),
    ],
)
def test_simulator_refusals(params, error):
    sim = simulator()
    start = sim.start(EidRequest(Level.HIGH))
    with pytest.raises(error):
        sim.finish(EidResponse({"state": start.pending.relay_state, **params}, start.pending))
