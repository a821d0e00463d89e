#!/usr/bin/env bash
# Installs the Debian packages that the test-suite drives as real components.
set -euo pipefail
need=()
command -v softhsm2-util >/dev/null || need+=(softhsm2)
command -v chromium >/dev/null || need+=(chromium)
command -v openssl >/dev/null || need+=(openssl)
command -v pkcs11-tool >/dev/null || need+=(opensc)
command -v xmlsec1 >/dev/null || need+=(xmlsec1)
command -v pdfsig >/dev/null || need+=(poppler-utils)  # validates our PAdES signatures (tests/signing)
command -v certutil >/dev/null || need+=(libnss3-tools)  # the NSS database pdfsig trusts the city root from
command -v promtool >/dev/null || need+=(prometheus)  # `promtool check metrics` on /metrics (tests/insights)
# bench/faults.py (tests/faults) runs and restarts a PostgreSQL cluster of its own, and PgBouncer
[ -x /usr/lib/postgresql/15/bin/initdb ] || need+=(postgresql-15)
command -v pgbouncer >/dev/null || need+=(pgbouncer)
# SimpleSAMLphp 1.19 as an independent SAML IdP for the eID end-to-end test (run under php -S;
# the package also pulls in an httpd, apache2 by default, which the tests do not use)
[ -d /usr/share/simplesamlphp/www ] || need+=(simplesamlphp)
command -v php >/dev/null || need+=(php-cli)
php -m 2>/dev/null | grep -x dom >/dev/null || need+=(php-xml)  # no -q: with pipefail, an early exit is SIGPIPE
php -m 2>/dev/null | grep -x mbstring >/dev/null || need+=(php-mbstring)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "missing Debian packages: ${need[*]} (run as root or: sudo apt-get install ${need[*]})" >&2
    exit 1
  fi
  echo "installing Debian packages: ${need[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
