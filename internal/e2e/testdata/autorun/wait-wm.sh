# Sourced by the autorun programs: waits (up to 5 s) until the window manager
# runs. The vnc driver starts the init program (openbox) and the autorun
# program at the same moment, and a window mapped while openbox starts can
# stay unmapped for good (seen about every other time), which would leave
# the desktop black and the xterm without keyboard focus.
i=0
while [ $i -lt 50 ] && ! xprop -root _NET_SUPPORTING_WM_CHECK 2>/dev/null | grep -q 'window id'; do
  sleep 0.1
  i=$((i + 1))
done
