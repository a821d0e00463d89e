"""SimpleSAMLphp (Debian's ``simplesamlphp`` 1.19, PHP, not built on pysaml2) as a BundID-like
SAML IdP for tests: run under ``php -S`` with a generated configuration, keys made at test time,
``exampleauth:UserPass`` users with static attributes, signed and encrypted assertions.

BundID writes each attribute's trust level as an XML attribute of ``saml:Attribute``
(``akdb:TrustLevel="HOCH"``); SimpleSAMLphp has no setting for that. The one addition here is a
copy of its SAML2 library's ``Assertion`` class, loaded before the original by PHP's
``auto_prepend_file``, which writes ``akdb:TrustLevel`` for the attributes a user's
``akdb-trust-levels`` pseudo-attribute names (``<attribute name>=<level>``) and leaves that
pseudo-attribute out. Everything else (signing, encryption, metadata, bindings, the AuthnRequest
signature check) is SimpleSAMLphp's own code.
"""

from __future__ import annotations

import html
import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

import requests

from idp.eid.saml import AKDB_NS
from tests.eid.saml_idp import make_key_pair

SSP_ROOT = Path("/usr/share/simplesamlphp")
ASSERTION_PHP = SSP_ROOT / "vendor/simplesamlphp/saml2/src/SAML2/Assertion.php"
PHP = shutil.which("php") or "/usr/bin/php"
BPK2 = "urn:oid:1.3.6.1.4.1.25484.494450.3"
LOA_HIGH = "http://eidas.europa.eu/LoA/high"
TRUST_PSEUDO_ATTRIBUTE = "akdb-trust-levels"
HIDDEN = re.compile(r'<input[^>]*type="hidden"[^>]*>', re.IGNORECASE)
FORM = re.compile(r'<form[^>]*action="([^"]+)"', re.IGNORECASE)

# Users (exampleauth:UserPass): erika's attributes carry BundID trust levels, max's carry none
# (an IdP that is not BundID), both have the bPK2 pseudonym.
USERS: dict[str, dict[str, list[str]]] = {
    "erika:pin-erika": {
        BPK2: ["bpk2-erika-ssp-4711"],
        "urn:oid:2.5.4.42": ["Erika"],
        "urn:oid:2.5.4.4": ["Mustermann"],
        "urn:oid:1.2.40.0.10.2.1.1.55": ["1964-08-12"],
        TRUST_PSEUDO_ATTRIBUTE: [
            f"{BPK2}=HOCH",
            "urn:oid:2.5.4.42=HOCH",
            "urn:oid:2.5.4.4=HOCH",
            "urn:oid:1.2.40.0.10.2.1.1.55=HOCH",
        ],
    },
    "max:pin-max": {
        BPK2: ["bpk2-max-ssp-0815"],
        "urn:oid:2.5.4.42": ["Max"],
        "urn:oid:2.5.4.4": ["Mustermann"],
        "urn:oid:1.2.40.0.10.2.1.1.55": ["1970-01-01"],
    },
}


def _php(value: Any) -> str:
    """A Python value as a PHP literal (JSON decoded in PHP: no quoting mistakes)."""
    return f"json_decode({json.dumps(json.dumps(value))}, true)"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _patched_assertion() -> str:
    """SimpleSAMLphp's SAML2 Assertion class, writing akdb:TrustLevel (see the module doc)."""
    source = ASSERTION_PHP.read_text(encoding="utf-8")
    head = "    private function addAttributeStatement(DOMElement $root) : void\n    {\n"
    loop = "        foreach ($this->attributes as $name => $values) {\n"
    name = "            $attribute->setAttribute('Name', $name);\n"
    start = source.index(head)  # ValueError here: another SimpleSAMLphp version, adapt the patch
    at_loop = source.index(loop, start)
    at_name = source.index(name, at_loop)
    trust = (
        "        $akdbTrust = [];\n"
        f"        foreach ($this->attributes['{TRUST_PSEUDO_ATTRIBUTE}'] ?? [] as $pair) {{\n"
        "            [$k, $v] = explode('=', $pair, 2);\n"
        "            $akdbTrust[$k] = $v;\n"
        "        }\n"
    )
    skip = f"            if ($name === '{TRUST_PSEUDO_ATTRIBUTE}') {{ continue; }}\n"
    set_trust = (
        "            if (isset($akdbTrust[$name])) {\n"
        f"                $attribute->setAttributeNS('{AKDB_NS}', 'akdb:TrustLevel', $akdbTrust[$name]);\n"
        "            }\n"
    )
    return (
        source[:at_loop]
        + trust
        + loop
        + skip
        + source[at_loop + len(loop) : at_name + len(name)]
        + set_trust
        + source[at_name + len(name) :]
    )


class SimpleSamlPhp:
    """One SimpleSAMLphp IdP on 127.0.0.1, its files in ``directory``."""

    def __init__(self, directory: Path, *, sso_bindings: tuple[str, ...] = ()) -> None:
        self.dir = directory
        self.sso_bindings = sso_bindings  # empty: SimpleSAMLphp's default (HTTP-Redirect only)
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.sp_metadata_file = directory / "sp-metadata.xml"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def entity_id(self) -> str:
        return f"{self.url}/saml2/idp/metadata.php"

    def _write_config(self) -> None:
        d = self.dir
        for sub in ("config", "metadata", "cert", "log", "data", "tmp", "sessions"):
            (d / sub).mkdir(exist_ok=True)
        key, cert = make_key_pair(d / "cert", "idp")
        (d / "config" / "config.php").write_text(
            "<?php\n$config = [\n"
            f"  'baseurlpath' => '{self.url}/',\n"
            f"  'certdir' => '{d}/cert/',\n"
            f"  'loggingdir' => '{d}/log/',\n"
            f"  'datadir' => '{d}/data/',\n"
            f"  'tempdir' => '{d}/tmp',\n"
            "  'technicalcontact_name' => 'Test', 'technicalcontact_email' => 'test@example.org',\n"
            f"  'secretsalt' => '{secrets.token_hex(16)}',\n"
            f"  'auth.adminpassword' => '{secrets.token_hex(16)}',\n"
            "  'admin.protectindexpage' => false, 'admin.protectmetadata' => false,\n"
            "  'timezone' => 'UTC',\n"
            "  'logging.level' => SimpleSAML\\Logger::DEBUG,\n"
            "  'logging.handler' => 'file', 'logging.logfile' => 'simplesamlphp.log',\n"
            "  'enable.saml20-idp' => true,\n"
            "  'module.enable' => ['exampleauth' => true, 'core' => true, 'saml' => true, 'admin' => true],\n"
            "  'store.type' => 'phpsession',\n"
            "  'session.cookie.secure' => false,\n"
            f"  'session.phpsession.savepath' => '{d}/sessions',\n"
            "  'language.default' => 'en',\n"
            "  'metadata.sources' => [\n"
            f"    ['type' => 'flatfile', 'directory' => '{d}/metadata'],\n"
            f"    ['type' => 'xml', 'file' => '{self.sp_metadata_file}'],\n"
            "  ],\n"
            "];\n"
        )
        (d / "config" / "authsources.php").write_text(
            "<?php\n$config = [\n"
            "  'admin' => ['core:AdminPassword'],\n"
            f"  'eid-users' => array_merge(['exampleauth:UserPass'], {_php(USERS)}),\n"
            "];\n"
        )
        bindings = (
            f"  'SingleSignOnServiceBinding' => {_php(list(self.sso_bindings))},\n"
            if self.sso_bindings
            else ""
        )
        # The IdP: signs assertions (RSA-SHA256), encrypts them (to the SP metadata's encryption
        # certificate: AES-128-CBC, the key by RSA-OAEP, fixed in SimpleSAMLphp 1.19),
        # checks the AuthnRequest's signature, names attributes in the URI format, says level high.
        (d / "metadata" / "saml20-idp-hosted.php").write_text(
            "<?php\n"
            f"$metadata['{self.entity_id}'] = [\n"
            "  'host' => '__DEFAULT__',\n"
            f"  'privatekey' => '{key}',\n"
            f"  'certificate' => '{cert}',\n"
            "  'auth' => 'eid-users',\n"
            "  'signature.algorithm' => 'http://www.w3.org/2001/04/xmldsig-more#rsa-sha256',\n"
            "  'saml20.sign.assertion' => true,\n"
            "  'saml20.sign.response' => false,\n"
            "  'assertion.encryption' => true,\n"
            "  'validate.authnrequest' => true,\n"
            "  'attributes.NameFormat' => 'urn:oasis:names:tc:SAML:2.0:attrname-format:uri',\n"
            f"{bindings}"
            "  'authproc' => [\n"
            "    10 => ['class' => 'saml:AuthnContextClassRef',"
            f" 'AuthnContextClassRef' => '{LOA_HIGH}'],\n"
            "  ],\n"
            "];\n"
        )
        (d / "assertion-trustlevel.php").write_text(_patched_assertion())
        (d / "prepend.php").write_text(
            "<?php\n"
            f"require_once '{SSP_ROOT}/vendor/autoload.php';\n"
            f"require_once '{d}/assertion-trustlevel.php';\n"
        )
        # Until cityid runs (its URL has a port chosen then), SimpleSAMLphp knows no SP.
        self.sp_metadata_file.write_text(
            '<md:EntitiesDescriptor xmlns:md="urn:oasis:names:tc:SAML:2.0:metadata"/>'
        )

    def start(self) -> None:
        for _attempt in range(5):  # the port is chosen before php binds it: retry if it was taken
            self.port = _free_port()
            self._write_config()
            log = (self.dir / "php-server.log").open("wb")
            self.proc = subprocess.Popen(
                [
                    PHP,
                    "-d",
                    f"auto_prepend_file={self.dir}/prepend.php",
                    "-d",
                    f"session.save_path={self.dir}/sessions",
                    "-d",
                    "display_errors=stderr",
                    "-S",
                    f"127.0.0.1:{self.port}",
                    "-t",
                    str(SSP_ROOT / "www"),
                ],
                env={**os.environ, "SIMPLESAMLPHP_CONFIG_DIR": str(self.dir / "config")},
                stdout=log,
                stderr=subprocess.STDOUT,
            )
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline and self.proc.poll() is None:
                try:
                    if requests.get(f"{self.url}/saml2/idp/metadata.php", timeout=5).status_code == 200:
                        return
                except requests.ConnectionError:
                    time.sleep(0.1)
            self.stop()
        raise RuntimeError(f"SimpleSAMLphp did not start: {self.log()}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def log(self) -> str:
        parts = []
        for path in (self.dir / "php-server.log", self.dir / "log" / "simplesamlphp.log"):
            if path.exists():
                parts.append(path.read_text(errors="replace")[-4000:])
        return "\n".join(parts)

    def idp_metadata(self) -> str:
        """The IdP's metadata as SimpleSAMLphp publishes it."""
        resp = requests.get(f"{self.url}/saml2/idp/metadata.php", timeout=10)
        resp.raise_for_status()
        return resp.text

    def trust_sp(self, sp_metadata_xml: str) -> None:
        """Register an SP by its metadata document (SimpleSAMLphp's ``xml`` metadata source
        parses it: the ACS, binding and certificates it uses come from there)."""
        self.sp_metadata_file.write_text(sp_metadata_xml)

    def log_in(
        self, http: requests.Session, sso_url: str, user: str, *, form: dict[str, str] | None = None
    ) -> dict[str, str]:
        """As the citizen's browser: take the AuthnRequest to the IdP (``GET sso_url`` for
        HTTP-Redirect, a POST of ``form`` for HTTP-POST), log in as ``user`` ("name:password"),
        and return the IdP's HTML-POST answer: action URL and hidden fields (SAMLResponse,
        RelayState)."""
        page = (
            http.post(sso_url, data=form, timeout=30) if form is not None else http.get(sso_url, timeout=30)
        )
        assert page.status_code == 200, (page.status_code, page.text[:2000], self.log())
        assert 'name="password"' in page.text, (page.text[:3000], self.log())
        username, password = user.split(":", 1)
        fields = _hidden(page.text)
        fields.update({"username": username, "password": password})
        action = FORM.search(page.text)
        target = urljoin(page.url, html.unescape(action.group(1))) if action else page.url
        answer = http.post(target, data=fields, timeout=30)
        assert answer.status_code == 200, (answer.status_code, answer.text[:2000], self.log())
        post = FORM.search(answer.text)
        assert post and "SAMLResponse" in answer.text, (answer.text[:3000], self.log())
        return {"action": html.unescape(post.group(1)), **_hidden(answer.text)}


def _hidden(page: str) -> dict[str, str]:
    out = {}
    for tag in HIDDEN.findall(page):
        name = re.search(r'name="([^"]*)"', tag)
        value = re.search(r'value="([^"]*)"', tag)
        if name:
            out[html.unescape(name.group(1))] = html.unescape(value.group(1)) if value else ""
    return out
