"""The SAML connector's settings in cityid.toml: read strictly, checked (metadata included)
before serving, so that no eID login ends in a server error."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from idp.app import create_app
from idp.config import load_config, serve_problem
from tests.eid.saml_idp import IDP_ENTITY, XMLSEC, TestIdp
from tests.idp.conftest import make_config
from tests.idp.test_config import _dir

ARTIFACT = "urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Artifact"


def _saml_toml(idp: TestIdp, extra: str = "") -> str:
    s = idp.settings
    return (
        'eid_connector = "saml"\n[eid]\n'
        f'saml_sp_key_file = "{s.sp_key_file}"\nsaml_sp_cert_file = "{s.sp_cert_file}"\n'
        f'saml_idp_entity_id = "{IDP_ENTITY}"\nsaml_idp_metadata_file = "{s.idp_metadata_file}"\n'
        f'saml_xmlsec_binary = "{XMLSEC}"\n{extra}'
        # a public issuer needs where the accessibility feedback goes (BITV 2.0 §7)
        '[branding]\naccessibility_contact = "barrierefreiheit@example.de"\n'
    )


@pytest.fixture
def upstream(tmp_path: Path) -> TestIdp:
    d = tmp_path / "idp"
    d.mkdir()
    return TestIdp(d)


def test_a_complete_saml_configuration_serves(tmp_path: Path, upstream: TestIdp) -> None:
    toml = _saml_toml(
        upstream,
        'saml_attribute_trust = "assertion"\n'
        'saml_pseudonym_attribute = "http://eidas.europa.eu/attributes/naturalperson/PersonIdentifier"\n'
        "[eid.saml_attribute_names]\n"
        'given_name = "http://eidas.europa.eu/attributes/naturalperson/CurrentGivenName"\n'
        'nationality = "http://eidas.europa.eu/attributes/naturalperson/Nationality"\n',
    )
    cfg = load_config(_dir(tmp_path, toml))
    assert serve_problem(cfg) is None
    from idp.eid.saml import settings_from_config

    s = settings_from_config(cfg)
    assert s.attribute_trust == "assertion"
    assert s.pseudonym_attribute.endswith("PersonIdentifier")
    assert s.attribute_names["given_name"].endswith("CurrentGivenName")
    assert s.attribute_names["family_name"] == "urn:oid:2.5.4.4"  # the defaults stay
    assert s.attribute_names["nationality"].endswith("/Nationality")  # known, no default name


@pytest.mark.parametrize(
    ("extra", "named"),
    [
        ('saml_attribute_trust = "all"\n', "saml_attribute_trust"),
        ('saml_context_names = "stork"\n', "saml_context_names"),
        ('saml_pseudonym_attribute = ""\n', "saml_pseudonym_attribute"),
        ('saml_pseudonym_attribute = " urn:x "\n', "saml_pseudonym_attribute"),
        ('[eid.saml_attribute_names]\nshoe_size = "urn:x"\n', "shoe_size"),
        ('[eid.saml_attribute_names]\ngiven_name = ""\n', "given_name"),
        ('[eid.saml_attribute_names]\ngiven_name = "urn:oid:2.5.4.4"\n', "two attributes"),
        (
            '[eid.saml_attribute_names]\ngiven_name = "urn:oid:1.3.6.1.4.1.25484.494450.3"\n',
            "pseudonym attribute",
        ),
    ],
)
def test_an_unusable_saml_setting_stops_serve_by_name(
    tmp_path: Path, upstream: TestIdp, extra: str, named: str
) -> None:
    found = serve_problem(load_config(_dir(tmp_path, _saml_toml(upstream, extra))))
    assert found is not None and named in found, found


def test_an_unknown_eid_connector_stops_serve(tmp_path: Path) -> None:
    found = serve_problem(load_config(_dir(tmp_path, 'eid_connector = "samll"\n')))
    assert found is not None and "eid_connector" in found


def test_missing_saml_files_stop_serve(tmp_path: Path, upstream: TestIdp) -> None:
    Path(upstream.settings.idp_metadata_file).unlink()
    found = serve_problem(load_config(_dir(tmp_path, _saml_toml(upstream))))
    assert found is not None and "saml_idp_metadata_file" in found


def test_idp_metadata_without_post_or_redirect_sso_stops_serve_and_app_creation(
    tmp_path: Path, db_url: str
) -> None:
    """Was: POST /login/eid answered 500 (saml2.s_utils.UnsupportedBinding) at the first login."""
    d = tmp_path / "idp"
    d.mkdir()
    upstream = TestIdp(d, sso_bindings=(ARTIFACT,))
    cfg = load_config(_dir(tmp_path, _saml_toml(upstream)))
    found = serve_problem(cfg)
    assert found is not None and "SingleSignOnService" in found and "HTTP-Redirect" in found
    app_cfg = make_config(
        tmp_path / "data", db_url, "http://127.0.0.1:8000", eid_connector="saml", eid=cfg.eid
    )
    with pytest.raises(ValueError, match="SingleSignOnService"):
        create_app(app_cfg, check_schema=False)


def test_cityid_serve_exits_2_on_unusable_idp_metadata(tmp_path: Path) -> None:
    from tests.idp.test_processes import cityid, write_config

    d = tmp_path / "idp"
    d.mkdir()
    upstream = TestIdp(d, sso_bindings=(ARTIFACT,))
    data = tmp_path / "data"
    write_config(data, f"sqlite:///{tmp_path / 'db.sqlite3'}", "http://127.0.0.1:8000")
    with (data / "cityid.toml").open("a") as fh:
        fh.write(_saml_toml(upstream))
    res = cityid(data, "serve", check=False)
    assert res.returncode == 2, res.stdout + res.stderr
    assert "SingleSignOnService" in res.stderr and "Traceback" not in res.stderr, res.stderr


def test_an_idp_with_only_http_redirect_serves(tmp_path: Path, db_url: str) -> None:
    from saml2 import BINDING_HTTP_REDIRECT

    d = tmp_path / "idp"
    d.mkdir()
    upstream = TestIdp(d, sso_bindings=(BINDING_HTTP_REDIRECT,))
    cfg = load_config(_dir(tmp_path, _saml_toml(upstream)))
    assert serve_problem(cfg) is None


def test_environment_variables_set_the_attribute_names(
    tmp_path: Path, upstream: TestIdp, monkeypatch: Any
) -> None:
    monkeypatch.setenv("CITYID_EID_SAML_ATTRIBUTE_NAMES", "given_name=urn:x:given, family_name=urn:x:family")
    monkeypatch.setenv("CITYID_EID_SAML_ATTRIBUTE_TRUST", "assertion")
    cfg = load_config(_dir(tmp_path, _saml_toml(upstream)))
    assert cfg.eid.saml_attribute_names == {"given_name": "urn:x:given", "family_name": "urn:x:family"}
    assert cfg.eid.saml_attribute_trust == "assertion"
    assert serve_problem(cfg) is None


def test_an_sp_certificate_of_another_key_stops_serve(tmp_path: Path, upstream: TestIdp) -> None:
    """The IdP would refuse every signed AuthnRequest and encrypt to a key cityid lacks."""
    from tests.eid.saml_idp import make_key_pair

    _other_key, other_cert = make_key_pair(tmp_path, "other")
    Path(upstream.settings.sp_cert_file).write_text(Path(other_cert).read_text())
    found = serve_problem(load_config(_dir(tmp_path, _saml_toml(upstream))))
    assert found is not None and "not the key's" in found, found
    Path(upstream.settings.sp_key_file).write_text("not a key")
    found = serve_problem(load_config(_dir(tmp_path, _saml_toml(upstream))))
    assert found is not None and "PEM private key" in found, found
