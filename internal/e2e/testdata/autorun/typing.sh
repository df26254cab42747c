#!/bin/sh
# Autorun program of TestE2E_Browser: an xterm that covers most of the screen
# and writes what is typed into it to $HOME/typed.txt.
. "$(dirname "$0")/wait-wm.sh"
exec xterm -geometry 200x60+0+0 -e sh -c 'exec cat >"$HOME/typed.txt"'
