import pytest

from policies import DeviceAttestationFacts, Level, assess_device, device_max_level


def facts(security_level="strongbox", verified_boot=True, device_locked=True, warnings=()):
    return DeviceAttestationFacts(security_level, verified_boot, device_locked, warnings)


@pytest.mark.parametrize(
    ("attested", "level", "code"),
    [
        pytest.param(facts("software"), Level.LOW, "software_key", id="fail/software-key-low-only"),
        pytest.param(facts("tee"), Level.SUBSTANTIAL, "hardware_key", id="ok/tee"),
        pytest.param(facts("strongbox"), Level.SUBSTANTIAL, "hardware_key", id="ok/strongbox"),
        pytest.param(facts("secure-enclave"), Level.SUBSTANTIAL, "hardware_key", id="ok/enclave"),
        pytest.param(facts("tpm"), Level.SUBSTANTIAL, "hardware_key", id="ok/tpm"),
        pytest.param(facts("security-key"), Level.SUBSTANTIAL, "hardware_key", id="ok/fido-key"),
        pytest.param(facts("quantum"), None, "unknown_security_level", id="fail/unknown-level-no-enrol"),
        pytest.param(facts(verified_boot=False), Level.LOW, "boot_not_verified", id="fail/unverified-boot"),
        pytest.param(facts(device_locked=False), Level.LOW, "bootloader_unlocked", id="fail/unlocked"),
        pytest.param(
            facts(warnings=("patch level old",)),
            Level.LOW,
            "attestation_warnings",
            id="fail/warnings-cap-at-low",
        ),
    ],
)
def test_device_max_level_hardware_and_good_state_reach_substantial_never_high(attested, level, code):
    assessment = assess_device(attested)
    assert assessment.max_level is level
    assert assessment.reason.code == code
    assert assessment.reason.text
    assert device_max_level(attested) is level
    assert level is not Level.HIGH
