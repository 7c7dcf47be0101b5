#!/usr/bin/env bash
# Set-up for the test suite, run by `deno task test` before anything else; idempotent and quick
# once done. On a Debian-like machine as root it installs what the tests need (libusb for the ffi
# tests; QEMU, busybox and Debian's kernel for the hardware-in-the-loop rig) via tests/hil/prepare.sh.
# Elsewhere it says what is missing; under CI=true a missing piece is an error, never a skip.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '[setup] %s\n' "$*" >&2; }

if [ "$(id -u)" = 0 ] && command -v apt-get > /dev/null; then
  bash tests/hil/prepare.sh
  exit 0
fi

missing=""
ldconfig -p 2> /dev/null | grep -q 'libusb-1\.0\.so\.0' || [ -n "${LIBUSB_PATH:-}" ] || missing+=" libusb-1.0"
command -v qemu-system-x86_64 > /dev/null || missing+=" qemu-system-x86"
if [ -n "$missing" ]; then
  say "MISSING:$missing — install them (Debian: apt-get install -y libusb-1.0-0 qemu-system-x86" \
    "busybox-static), or run this suite as root on a Debian-like machine so it installs them."
  if [ "${CI:-}" = true ]; then
    say "CI=true: refusing to run the suite without them."
    exit 1
  fi
fi
