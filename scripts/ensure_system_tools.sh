#!/usr/bin/env bash
# Debian packages the project uses, installed when missing (as root, with apt-get):
#   dcmtk             dsrdump / dcmdump: read back the DICOM SR and SEG the apps write
#   dicom3tools       dciodvfy: the reference IOD validator every DICOM object we write must pass
#   orthanc           a real PACS on loopback for the MONAI Label and DICOMweb tests
#   orthanc-dicomweb  Orthanc's DICOMweb plugin (QIDO-RS / WADO-RS / STOW-RS)
set -euo pipefail
missing=()
command -v dsrdump >/dev/null 2>&1 || missing+=(dcmtk)
command -v dciodvfy >/dev/null 2>&1 || missing+=(dicom3tools)
command -v Orthanc >/dev/null 2>&1 || [ -x /usr/sbin/Orthanc ] || missing+=(orthanc)
ls /usr/share/orthanc/plugins/libOrthancDicomWeb.so >/dev/null 2>&1 || missing+=(orthanc-dicomweb)
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing Debian packages: ${missing[*]}"
    apt-get update -qq >/dev/null
    # The tests never use a system-wide Orthanc service: they start their own on free loopback ports.
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
else
    echo "missing Debian packages: ${missing[*]} (install them, e.g. 'sudo apt-get install ${missing[*]}')" >&2
    exit 1
fi
