#!/bin/sh
# Autorun program of TestE2E_Sessions: writes its arguments, one per line, to
# $HOME/autorun-args.txt (complete or not at all), then shows an xterm so
# that screenshots of the desktop are not blank.
printf '%s\n' "$@" >"$HOME/autorun-args.txt.tmp" && mv -f "$HOME/autorun-args.txt.tmp" "$HOME/autorun-args.txt"
. "$(dirname "$0")/wait-wm.sh"
exec xterm -geometry 80x24+40+40 -e sleep 600
