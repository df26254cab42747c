#!/bin/sh
# Autorun program: an xterm, so that the desktop is not blank.
. "$(dirname "$0")/wait-wm.sh"
exec xterm -geometry 80x24+40+40 -e sleep 600
