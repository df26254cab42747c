#!/bin/sh
# Init file: the window manager, as the default init would start it.
exec openbox
