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
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "missing Debian packages: ${need[*]} (run as root or: sudo apt-get install ${need[*]})" >&2
    exit 1
  fi
  echo "installing Debian packages: ${need[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
