import pytest

from tests.eid.saml_idp import TestIdp


@pytest.fixture(scope="module")
def saml_idp(tmp_path_factory):
    """One IdP (keys, certificates, metadata for both sides) per test module."""
    return TestIdp(tmp_path_factory.mktemp("saml"))
