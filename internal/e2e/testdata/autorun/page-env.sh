#!/bin/sh
# Autorun program of the page tests (page_test.go): writes the session's
# DISPLAY and XAUTHORITY to $HOME/page-env.txt (complete or not at all), so
# that the test can run xclip and xdpyinfo as the owner in the session, then
# shows an xterm that writes what is typed into it to $HOME/typed.txt.
printf 'DISPLAY=%s\nXAUTHORITY=%s\n' "$DISPLAY" "$XAUTHORITY" >"$HOME/page-env.txt.tmp" && mv -f "$HOME/page-env.txt.tmp" "$HOME/page-env.txt"
. "$(dirname "$0")/wait-wm.sh"
exec xterm -geometry 200x60+0+0 -e sh -c 'exec cat >"$HOME/typed.txt"'
