#!/bin/sh
# debversion.sh VERSION prints the Debian package version of VERSION, the
# output of `git describe --tags --always --dirty` (the Makefile's VERSION):
#
#   v1.2.3                 1.2.3
#   v1.2.3-rc1             1.2.3~rc1            (sorts before 1.2.3)
#   v1.2.3-4-gabc1234      1.2.3+git4.abc1234   (sorts after 1.2.3)
#   abc1234, 3c72f4a       0.0.0~gitabc1234     (no tag yet)
#   ...-dirty              ...+dirty, or .dirty after a '+'
#   anything else          0.0.0~TEXT, TEXT cleaned to Debian's characters
set -eu

v=${1:-}
[ -n "$v" ] || v=dev
dirty=
case $v in
*-dirty)
	dirty=1
	v=${v%-dirty}
	;;
esac

# A tag starts with v and a digit, or is a dotted number (1.2.3); a bare
# abbreviated commit hash (git describe --always without a tag) is neither.
if printf '%s\n' "$v" | grep -Eq '^(v[0-9]|[0-9]+\.[0-9])'; then
	v=${v#v}
	if printf '%s\n' "$v" | grep -Eq -- '-[0-9]+-g[0-9a-f]+$'; then
		sha=${v##*-g}
		rest=${v%-g*}
		n=${rest##*-}
		v="${rest%-*}+git$n.$sha"
	fi
	# What is left of '-' marks a pre-release (v1.2.0-rc1).
	v=$(printf '%s\n' "$v" | tr '-' '~')
elif printf '%s\n' "$v" | grep -Eq '^[0-9a-f]{4,40}$'; then
	v="0.0.0~git$v"
else
	v="0.0.0~$v"
fi
# Debian allows letters, digits and . + ~ (and '-' only before a revision).
v=$(printf '%s\n' "$v" | sed 's/[^A-Za-z0-9.+~]/./g')
if [ -n "$dirty" ]; then
	case $v in
	*+*) v="$v.dirty" ;;
	*) v="$v+dirty" ;;
	esac
fi
printf '%s\n' "$v"
