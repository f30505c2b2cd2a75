#!/usr/bin/env bash
# Screenshots of the real window, one PNG per panel (plus the shortcuts overlay), on the
# demo catalogue, under a virtual X server with Mesa's software OpenGL.
#
#   scripts/screenshot.sh [OUT_DIR]      (default: target/screenshots)
#
# The panel is chosen with WHALEID_PANEL; each shot is taken once the window title says the
# catalogue is open and the thumbnails had a moment to decode (the identification panels wait
# longer: the crops are embedded and searched in the background first).
# Identification uses WHALEID_EMBEDDER=tiny-random unless told otherwise: an untrained tiny
# model, so the shots need no weights (its scores and matches mean nothing).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-target/screenshots}
mkdir -p "$OUT"

# Debian packages: the X server, its tools, and Mesa (EGL/GL in software).
packages=(xvfb xauth xdotool imagemagick libegl1 libegl-mesa0 libgl1-mesa-dri libgbm1)
missing=()
for p in "${packages[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing ${missing[*]}" >&2
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

cargo build --quiet --bin whaleid
BIN=target/debug/whaleid

WORK=$(mktemp -d)
export WHALEID_HOME="$WORK/home"
"$BIN" demo >/dev/null
DEMO="$WHALEID_HOME/demo/demo.whaleid"

DISPLAY_NUM=${SCREENSHOT_DISPLAY:-97}
Xvfb ":$DISPLAY_NUM" -screen 0 1280x800x24 -nolisten tcp -noreset >"$WORK/xvfb.log" 2>&1 &
XVFB=$!
APP=
cleanup() {
  [ -n "$APP" ] && kill "$APP" 2>/dev/null || true
  kill "$XVFB" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT
export DISPLAY=":$DISPLAY_NUM"
export LIBGL_ALWAYS_SOFTWARE=1
export WHALEID_EMBEDDER=${WHALEID_EMBEDDER:-tiny-random}
for _ in $(seq 1 50); do xdpyinfo >/dev/null 2>&1 && break; [ -e "/tmp/.X11-unix/X$DISPLAY_NUM" ] && break; sleep 0.1; done

# Waits until the window's title says the catalogue is open; prints the window id.
wait_for_window() {
  for _ in $(seq 1 240); do
    if id=$(xdotool search --name "^whaleid - demo\.whaleid$" 2>/dev/null | head -1) && [ -n "$id" ]; then
      echo "$id"
      return 0
    fi
    sleep 0.25
  done
  echo "the window did not open; its log:" >&2
  cat "$WORK/app.log" >&2
  return 1
}

shot() { # panel, file, [keys to press first, or click:X,Y], [seconds to wait]
  local panel=$1 file=$2 keys=${3:-} wait=${4:-3}
  WHALEID_PANEL=$panel "$BIN" app --catalog "$DEMO" >"$WORK/app.log" 2>&1 &
  APP=$!
  local win
  win=$(wait_for_window)
  xdotool mousemove 1279 0 # no tooltip in the picture
  sleep "$wait" # thumbnails, photos, embeddings and searches are done on worker threads
  if [[ "$keys" == click:* ]]; then # click:X,Y in the window, then wait as long again
    local xy=${keys#click:}
    xdotool mousemove --window "$win" "${xy%,*}" "${xy#*,}" click 1
    xdotool mousemove 1279 0
    sleep "$wait"
  elif [ -n "$keys" ]; then
    xdotool windowfocus --sync "$win" 2>/dev/null || true
    xdotool key --window "$win" "$keys"
    sleep 1
  fi
  import -window root "$OUT/$file"
  kill "$APP" && wait "$APP" 2>/dev/null || true
  APP=
  echo "$OUT/$file"
}

shot library library.png
shot annotate annotate.png
shot individuals individuals.png
shot library shortcuts.png F1
shot identify identify.png "" 12
shot map map.png "" 12
shot errors errors.png "" 15
shot train train.png "click:53,228" 10 # Start training, then a moment of the run
