#!/usr/bin/env bash
# Installs the Debian packages the tests and the demo talk to (Orthanc, dcmtk, dicom3tools, and Chromium
# for the operator console's browser tests) when they are
# missing and we run as root. Otherwise it says what to install; the tests that need them then skip
# (outside CI) with that reason.
set -euo pipefail
missing=()
command -v Orthanc >/dev/null 2>&1 || missing+=(orthanc)
command -v storescu >/dev/null 2>&1 || missing+=(dcmtk)
command -v dciodvfy >/dev/null 2>&1 || missing+=(dicom3tools)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "Installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${missing[@]}" >/dev/null
  # The packaged Orthanc service is not wanted: tests and the demo start their own on free ports.
  if command -v service >/dev/null 2>&1; then service orthanc stop >/dev/null 2>&1 || true; fi
else
  echo "NOTE: missing Debian packages: ${missing[*]}." >&2
  echo "      Install them with: sudo apt-get install ${missing[*]}" >&2
  echo "      Tests that need them will be skipped (they fail instead when CI=true)." >&2
fi
