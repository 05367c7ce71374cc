#!/usr/bin/env bash
# System tools the tests use: DCMTK (dsrdump/dcmdump) validates the DICOM SR the Deploy app writes.
set -euo pipefail
if ! command -v dsrdump >/dev/null 2>&1; then
    if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
        echo "installing dcmtk (Debian package) for DICOM SR validation"
        apt-get update -qq >/dev/null
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dcmtk >/dev/null
    else
        echo "dcmtk is missing: install it with your package manager (e.g. 'sudo apt-get install dcmtk')" >&2
        exit 1
    fi
fi
