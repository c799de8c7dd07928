#!/usr/bin/env bash
# Install what napari needs from the system to draw on a virtual display: Xvfb and the Qt xcb
# libraries. Does nothing when they are all present; uses apt-get (as root, or through sudo).
set -euo pipefail
libs=(libGL.so.1 libEGL.so.1 libxkbcommon-x11.so.0 libxcb-icccm.so.4 libxcb-image.so.0 libxcb-keysyms.so.1
      libxcb-randr.so.0 libxcb-render-util.so.0 libxcb-xinerama.so.0 libxcb-xfixes.so.0 libxcb-shape.so.0
      libxcb-cursor.so.0 libfontconfig.so.1 libdbus-1.so.3)
missing=0
command -v xvfb-run >/dev/null 2>&1 || missing=1
command -v xauth >/dev/null 2>&1 || missing=1
for lib in "${libs[@]}"; do
  ldconfig -p 2>/dev/null | grep -q "$lib" || { missing=1; break; }
done
[ "$missing" = 0 ] && exit 0
if ! command -v apt-get >/dev/null 2>&1; then
  echo "Xvfb or the Qt xcb libraries are missing and apt-get is not available: install them with your" >&2
  echo "system's package manager (xvfb, xauth, libgl1, libegl1, libxkbcommon-x11-0, libxcb-*)." >&2
  exit 1
fi
SUDO=""
[ "$(id -u)" = 0 ] || SUDO="sudo"
echo "Installing Xvfb and the Qt xcb libraries with apt-get…"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends xvfb xauth libgl1 libegl1 libglib2.0-0 libfontconfig1 \
  libdbus-1-3 libxkbcommon-x11-0 libxcb-icccm4 libxcb-image0 libxcb-keysyms1 libxcb-randr0 \
  libxcb-render-util0 libxcb-xinerama0 libxcb-xfixes0 libxcb-shape0 libxcb-cursor0 libxi6 libxrender1 \
  libxext6 libsm6 libice6 >/dev/null
