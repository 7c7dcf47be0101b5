#!/usr/bin/env bash
# Prepares the hardware-in-the-loop rig for tests/hil: installs QEMU, a static
# busybox and libusb with apt, fetches Debian's stock kernel package, unpacks it
# into a cache, extracts the uncompressed vmlinux (fast direct PVH boot under
# TCG) and builds a small initramfs. Idempotent: a second run with an intact
# cache only checks and prints what it found.
#
# Usage: bash tests/hil/prepare.sh        (as root, no stdin needed)
# Env:   TBQ_HIL_CACHE   cache dir (default: $HOME/.cache/tbq-hil)
#        TBQ_HIL_FORCE=1 rebuild vmlinux and initramfs even when cached
set -euo pipefail
export LC_ALL=C DEBIAN_FRONTEND=noninteractive

log() { printf '[hil-prepare] %s\n' "$*" >&2; }
die() {
  printf '[hil-prepare] ERROR: %s\n' "$*" >&2
  exit 1
}

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CACHE="${TBQ_HIL_CACHE:-${HOME:-/root}/.cache/tbq-hil}"
PACKAGES=(qemu-system-x86 busybox-static libusb-1.0-0 xz-utils)
# Modules the guest's init loads at boot (with their dependencies). The USB
# class drivers (usb-storage, ftdi_sio) are deliberately absent so that libusb
# can claim the interfaces; the whole module tree stays reachable in the guest
# for `busybox modprobe` when a test wants a kernel driver.
BOOT_MODULES=(xhci_pci virtio_pci 9pnet_virtio 9p overlay)
# Modules a run may ask for (GuestOptions.modules) that ship in the initramfs
# with their dependency order, so init can insmod them before USB enumeration
# ends; any other module is modprobe'd from the cached tree after the root is
# mounted. usbhid binds the usb-kbd's interface; hid_generic binds the HID
# device usbhid creates (and gives it an input device).
EXTRA_MODULES=(usbhid hid_generic)

# Root is needed for apt-get and for the device node in the initramfs; a
# non-root caller only gets the "cache up to date" check.
need_root() {
  [ "$(id -u)" = 0 ] || die "must run as root to $1 (uid $(id -u)); run 'sudo bash $0' once"
}
command -v apt-get > /dev/null || die "apt-get not found: this rig needs a Debian-like host"
command -v dpkg-query > /dev/null || die "dpkg-query not found: this rig needs a Debian-like host"

APT_UPDATED=0
apt_update() {
  if [ "$APT_UPDATED" = 0 ]; then
    need_root "run apt-get update"
    log "apt-get update"
    apt-get -o DPkg::Lock::Timeout=600 update -q < /dev/null >&2 || die "apt-get update failed"
    APT_UPDATED=1
  fi
}
apt_lists_empty() {
  ! compgen -G '/var/lib/apt/lists/*_Packages*' > /dev/null
}

# --- 1. host packages -------------------------------------------------------
missing=()
for p in "${PACKAGES[@]}"; do
  if [ "$(dpkg-query -W -f='${Status}' "$p" 2> /dev/null || true)" != "install ok installed" ]; then
    missing+=("$p")
  fi
done
if [ "${#missing[@]}" -gt 0 ]; then
  need_root "apt-get install ${missing[*]}"
  apt_lists_empty && apt_update
  log "apt-get install ${missing[*]}"
  if ! apt-get -o DPkg::Lock::Timeout=600 install -y -q --no-install-recommends "${missing[@]}" < /dev/null >&2; then
    apt_update
    apt-get -o DPkg::Lock::Timeout=600 install -y -q --no-install-recommends "${missing[@]}" < /dev/null >&2 ||
      die "apt-get install ${missing[*]} failed"
  fi
else
  log "packages present: ${PACKAGES[*]}"
fi
command -v qemu-system-x86_64 > /dev/null || die "qemu-system-x86_64 missing after install"
BUSYBOX="$(dpkg -L busybox-static | grep -m1 '/bin/busybox$')" || die "busybox-static ships no busybox?"
[ -x "$BUSYBOX" ] || die "$BUSYBOX missing after install"

# --- 2. kernel package name -------------------------------------------------
resolve_kpkg() {
  apt-cache depends linux-image-amd64 2> /dev/null |
    sed -n 's/^ *Depends: \(linux-image-[0-9][^ ]*-amd64\)$/\1/p' | head -n 1
}
apt_lists_empty && apt_update
KPKG="$(resolve_kpkg)"
if [ -z "$KPKG" ]; then
  apt_update
  KPKG="$(resolve_kpkg)"
fi
[ -n "$KPKG" ] || die "cannot resolve the kernel package behind linux-image-amd64 (apt-cache depends)"
KVER="${KPKG#linux-image-}"
KDIR="$CACHE/$KVER"
log "kernel package: $KPKG (modules dir $KVER)"

# The recipe hash covers this script, so editing it rebuilds the artefacts.
RECIPE="$(sha256sum "${BASH_SOURCE[0]}" | cut -c1-16)"
MANIFEST="$CACHE/manifest.json"
if [ "${TBQ_HIL_FORCE:-0}" != 1 ] && [ -f "$MANIFEST" ] &&
  grep -q "\"recipe\": \"$RECIPE\"" "$MANIFEST" &&
  grep -q "\"kernelRelease\": \"$KVER\"" "$MANIFEST" &&
  [ -s "$KDIR/vmlinux" ] && [ -s "$KDIR/initramfs.cpio" ]; then
  log "cache up to date: $MANIFEST"
  exit 0
fi

# --- 3. download and unpack the kernel --------------------------------------
need_root "download the kernel and build the initramfs"
mkdir -p "$KDIR"
PKGROOT="$KDIR/pkg"
if [ ! -f "$PKGROOT/.unpacked" ]; then
  DL="$KDIR/download"
  rm -rf "$DL" "$PKGROOT"
  mkdir -p "$DL"
  chmod 0777 "$DL" # apt-get download drops privileges to _apt when it can
  log "apt-get download $KPKG"
  if ! (cd "$DL" && apt-get download -q "$KPKG" < /dev/null >&2); then
    apt_update
    (cd "$DL" && apt-get download -q "$KPKG" < /dev/null >&2) || die "apt-get download $KPKG failed"
  fi
  DEB="$(ls "$DL"/*.deb)"
  log "dpkg -x $(basename "$DEB") -> $PKGROOT"
  dpkg -x "$DEB" "$PKGROOT"
  rm -rf "$DL"
  touch "$PKGROOT/.unpacked"
else
  log "kernel package already unpacked in $PKGROOT"
fi
MODDIR="$PKGROOT/lib/modules/$KVER"
BZIMAGE="$PKGROOT/boot/vmlinuz-$KVER"
[ -f "$BZIMAGE" ] || die "no $BZIMAGE in the kernel package"
[ -d "$MODDIR/kernel" ] || die "no $MODDIR/kernel in the kernel package"

# --- 4. vmlinux from the bzImage ---------------------------------------------
# The x86 boot header gives setup_sects (byte at 0x1f1; 0 means 4), and, for
# boot protocol >= 2.08, payload_offset/payload_length (u32 at 0x248/0x24c)
# relative to the protected-mode code, which starts after (setup_sects+1)
# sectors of 512 bytes. The payload is the compressed vmlinux ELF.
u8_at() { od -A n -t u1 -j "$2" -N 1 "$1" | tr -d ' '; }
u32_at() { od -A n -t u4 -j "$2" -N 4 "$1" | tr -d ' '; }
[ "$(od -A n -t x1 -j $((0x202)) -N 4 "$BZIMAGE" | tr -d ' ')" = 48647253 ] ||
  die "$BZIMAGE has no 'HdrS' boot header"
SETUP_SECTS="$(u8_at "$BZIMAGE" $((0x1f1)))"
[ "$SETUP_SECTS" = 0 ] && SETUP_SECTS=4
PM_START=$(((SETUP_SECTS + 1) * 512))
PAYLOAD_OFF=$((PM_START + $(u32_at "$BZIMAGE" $((0x248)))))
PAYLOAD_LEN="$(u32_at "$BZIMAGE" $((0x24c)))"
payload() {
  dd if="$BZIMAGE" bs=64K skip="$PAYLOAD_OFF" count="$PAYLOAD_LEN" \
    iflag=skip_bytes,count_bytes status=none
}
MAGIC="$(od -A n -t x1 -j "$PAYLOAD_OFF" -N 6 "$BZIMAGE" | tr -d ' ')"
case "$MAGIC" in
  fd377a585a00) DECOMP=(xz -dc --single-stream) ;;
  1f8b*) DECOMP=(gzip -dc) ;;
  28b52ffd*) DECOMP=(zstd -dcq) ;;
  5d0000*) DECOMP=(xz -dc --format=lzma) ;;
  425a68*) DECOMP=(bzip2 -dc) ;;
  *) die "unknown compressed payload magic $MAGIC in $BZIMAGE" ;;
esac
command -v "${DECOMP[0]}" > /dev/null || die "need ${DECOMP[0]} to decompress the kernel payload"
log "extracting vmlinux: payload at $PAYLOAD_OFF, $PAYLOAD_LEN bytes, ${DECOMP[*]}"
# gzip and zstd may complain about the 4-byte size trailer after the stream.
payload | "${DECOMP[@]}" > "$KDIR/vmlinux.tmp" 2> "$KDIR/decompress.log" || true
[ "$(od -A n -t x1 -N 4 "$KDIR/vmlinux.tmp" | tr -d ' ')" = 7f454c46 ] ||
  die "decompressed payload is not an ELF file (see $KDIR/decompress.log)"
mv "$KDIR/vmlinux.tmp" "$KDIR/vmlinux"

# --- 5. module order ----------------------------------------------------------
# Index every module by its name (file name with '-' read as '_'), then walk
# the `depends=` field of each module's .modinfo section depth-first so that
# every module comes after everything it needs.
log "depmod (busybox) for the guest's modprobe"
"$BUSYBOX" depmod -b "$PKGROOT" "$KVER"
declare -A MODPATH=()
while IFS= read -r f; do
  n="$(basename "$f")"
  n="${n%%.ko*}"
  MODPATH["${n//-/_}"]="$f"
done < <(cd "$MODDIR" && find kernel -name '*.ko*')
mod_depends() {
  local f="$MODDIR/${MODPATH[$1]}"
  case "$f" in
    *.ko.xz) xz -dc "$f" ;;
    *.ko.zst) zstd -dcq "$f" ;;
    *.ko.gz) gzip -dc "$f" ;;
    *) cat "$f" ;;
  esac | tr '\0' '\n' | sed -n 's/^depends=//p' | head -n 1 | tr ',' ' '
}
declare -A SEEN=()
ORDER=()
visit() {
  local m="${1//-/_}" d
  [ -n "${SEEN[$m]:-}" ] && return 0
  SEEN[$m]=1
  [ -n "${MODPATH[$m]:-}" ] || die "module $m not found in $MODDIR"
  for d in $(mod_depends "$m"); do visit "$d"; done
  ORDER+=("$m")
}
for m in "${BOOT_MODULES[@]}"; do visit "$m"; done
BOOT_ORDER=("${ORDER[@]}")
log "boot modules in load order: ${BOOT_ORDER[*]}"
# Each extra module's load sequence: what it needs beyond the boot modules,
# dependencies first.
EXTRA_LINES=()
declare -A EXTRA_FILES=()
for m in "${EXTRA_MODULES[@]}"; do
  SEEN=()
  for b in "${BOOT_ORDER[@]}"; do SEEN[$b]=1; done
  ORDER=()
  visit "$m"
  EXTRA_LINES+=("$m ${ORDER[*]}")
  for k in "${ORDER[@]}"; do EXTRA_FILES[$k]=1; done
  log "extra module $m: load order ${ORDER[*]}"
done

# --- 6. initramfs -------------------------------------------------------------
# PID 1 of the guest. It loads the boot modules, mounts the per-run share
# (tag tbqrun) and sources its config.sh (written by rig.ts), builds the root:
# host / over 9p read-only + tmpfs upper via overlayfs, with proc, sysfs,
# devtmpfs and the read-write shares mounted inside, then runs the run's job.sh
# chrooted there with stdout/stderr into the run share, writes the exit code
# and powers off. Lines starting with "TBQ-HIL:" on the console are markers.
write_init() {
  cat << 'INIT'
#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mount -t devtmpfs dev /dev
exec < /dev/console > /dev/console 2>&1
mount -t proc proc /proc
mount -t sysfs sys /sys
say() { echo "TBQ-HIL: $*"; }
uptime_s() { cut -d' ' -f1 /proc/uptime; }
fail() {
  say "init-failed $*"
  reboot -f
  sleep 5
  exit 1
}
say "init-start $(uptime_s)"
# "tbq.trace" on the kernel command line prints a timestamp per phase.
case " $(cat /proc/cmdline) " in
  *" tbq.trace "*) trace() { say "trace $* $(uptime_s)"; } ;;
  *) trace() { :; } ;;
esac
while read -r m; do
  insmod "/modules/$m.ko" || fail "insmod $m"
  trace "insmod $m"
done < /modules.order
# Requested modules that ship here (their load sequence in /modules.extra)
# load now, before USB enumeration ends, so their drivers bind as devices
# appear; the others wait for the module tree (modprobe, after the root).
TBQ_MODPROBE=""
load_extra() {
  line="$(grep "^$1 " /modules.extra)"
  if [ -z "$line" ]; then
    TBQ_MODPROBE="$TBQ_MODPROBE $1"
    return 0
  fi
  for k in ${line#* }; do
    [ -d "/sys/module/$k" ] || insmod "/modules/$k.ko" || fail "insmod $k (for $1)"
  done
  trace "module $1"
}
O9P="trans=virtio,version=9p2000.L,msize=512000"
mount -t 9p -o "$O9P,cache=none" tbqrun /share || fail "mount tbqrun"
[ -f /share/config.sh ] || fail "no config.sh in the run share"
. /share/config.sh
for m in ${TBQ_MODULES:-}; do load_extra "$m"; done
mount -t 9p -o "$O9P,ro,cache=loose" hostroot /lower || fail "mount hostroot"
mount -t tmpfs -o mode=0755 upper /rw || fail "mount tmpfs"
mkdir -p /rw/upper /rw/work
mount -t overlay -o lowerdir=/lower,upperdir=/rw/upper,workdir=/rw/work root /root ||
  fail "mount overlay"
trace "root mounted"
R=/root
mkdir -p $R/proc $R/sys $R/dev $R/run
mount -t proc proc $R/proc
mount -t sysfs sys $R/sys
mount -t devtmpfs dev $R/dev
mkdir -p $R/dev/pts $R/dev/shm
mount -t devpts devpts $R/dev/pts
mount -t tmpfs -o mode=1777 shm $R/dev/shm
mount -t tmpfs -o mode=0755 run $R/run
if [ -n "$TBQ_KVER" ] && [ -n "$TBQ_MODDIR" ]; then
  mkdir -p $R/lib/modules
  rm -rf "$R/lib/modules/$TBQ_KVER"
  ln -s "$TBQ_MODDIR" "$R/lib/modules/$TBQ_KVER"
fi
# share TAG PATH: mounts a read-write host directory at the same path.
share() {
  mkdir -p "$R$2" && mount -t 9p -o "$O9P,cache=mmap" "$1" "$R$2" || fail "mount share $2"
}
tbq_shares
trace "shares mounted"
mkdir -p "$R$TBQ_RUNDIR"
mount --bind /share "$R$TBQ_RUNDIR" || fail "bind run share"
# Hotplug for libudev users (libusb): the uevent relay (tests/hil/
# uevent_relay.ts) re-broadcasts kernel uevents the way udevd would. It starts
# now so that deno's start-up overlaps USB enumeration; the command waits for it.
RELAY_READY="$R/run/tbq-uevent-relay.ready"
if [ -n "${TBQ_RELAY:-}" ]; then
  chroot $R /bin/sh -c "$TBQ_RELAY" < /dev/null > /share/uevent-relay.log 2>&1 &
  relay_pid=$!
  trace "relay started"
fi
if [ -n "$TBQ_MODPROBE" ]; then
  mkdir -p /lib/modules
  ln -sfn "/lower$TBQ_MODDIR" "/lib/modules/$TBQ_KVER"
  for m in $TBQ_MODPROBE; do
    modprobe "$m" || fail "modprobe $m"
    trace "modprobe $m"
  done
fi
# Wait (bounded) until the host's USB devices have enumerated; the hub
# driver has no event a shell could block on, so poll sysfs.
usb_count() {
  n=0
  for d in /sys/bus/usb/devices/[0-9]*-[0-9]*; do
    case "$d" in *:*) ;; *) [ -f "$d/idVendor" ] && n=$((n + 1)) ;; esac
  done
  echo $n
}
tries=0
while [ "$(usb_count)" -lt "${TBQ_USB_DEVICES:-0}" ] && [ $tries -lt 500 ]; do
  usleep 20000
  tries=$((tries + 1))
done
[ "$(usb_count)" -ge "${TBQ_USB_DEVICES:-0}" ] || say "usb-timeout $(usb_count)/$TBQ_USB_DEVICES"
trace "usb settled"
if [ -n "${TBQ_RELAY:-}" ]; then
  tries=0
  while [ ! -e "$RELAY_READY" ] && [ $tries -lt 3000 ] && kill -0 $relay_pid 2> /dev/null; do
    usleep 10000
    tries=$((tries + 1))
  done
  if [ ! -e "$RELAY_READY" ]; then
    tail -n 20 /share/uevent-relay.log
    fail "uevent relay not listening (see uevent-relay.log above)"
  fi
  trace "relay listening"
fi
say "command-start $(uptime_s)"
chroot $R /bin/sh "$TBQ_RUNDIR/job.sh" < /dev/null > /share/stdout 2> /share/stderr
code=$?
echo "$code" > /share/exit.tmp && mv /share/exit.tmp /share/exit
say "command-exit $code $(uptime_s)"
sync
# QEMU runs with -no-reboot, so a reboot ends it; unlike poweroff this works
# without ACPI (the rig boots with acpi=off: faster under TCG).
reboot -f
INIT
}
STAGE="$KDIR/initramfs.d"
rm -rf "$STAGE"
mkdir -p "$STAGE"/{bin,dev,proc,sys,lower,rw,root,share,modules}
cp "$BUSYBOX" "$STAGE/bin/busybox"
: > "$STAGE/modules.order"
stage_module() {
  local src="$MODDIR/${MODPATH[$1]}"
  case "$src" in
    *.ko.xz) xz -dc "$src" > "$STAGE/modules/$1.ko" ;;
    *.ko.zst) zstd -dcq "$src" > "$STAGE/modules/$1.ko" ;;
    *.ko.gz) gzip -dc "$src" > "$STAGE/modules/$1.ko" ;;
    *) cp "$src" "$STAGE/modules/$1.ko" ;;
  esac
}
for m in "${BOOT_ORDER[@]}"; do
  stage_module "$m"
  echo "$m" >> "$STAGE/modules.order"
done
for m in "${!EXTRA_FILES[@]}"; do stage_module "$m"; done
printf '%s\n' "${EXTRA_LINES[@]}" > "$STAGE/modules.extra"
write_init > "$STAGE/init"
chmod 0755 "$STAGE/init" "$STAGE/bin/busybox"
# The kernel opens /dev/console for PID 1 before anything is mounted.
mknod -m 0600 "$STAGE/dev/console" c 5 1
log "building initramfs.cpio"
(cd "$STAGE" && find . | LC_ALL=C sort | "$BUSYBOX" cpio -o -H newc > "$KDIR/initramfs.cpio.tmp" 2> /dev/null)
mv "$KDIR/initramfs.cpio.tmp" "$KDIR/initramfs.cpio"
rm -rf "$STAGE"

cat > "$MANIFEST" << EOF
{
  "recipe": "$RECIPE",
  "kernelPackage": "$KPKG",
  "kernelRelease": "$KVER",
  "vmlinux": "$KDIR/vmlinux",
  "bzImage": "$BZIMAGE",
  "initramfs": "$KDIR/initramfs.cpio",
  "modulesDir": "$MODDIR",
  "busybox": "$BUSYBOX",
  "bootModules": "${BOOT_ORDER[*]}",
  "extraModules": "${EXTRA_MODULES[*]}"
}
EOF
log "done: $MANIFEST"
