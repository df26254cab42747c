// Package packaging holds berth's Debian packaging, built by `make deb` with
// nfpm into dist/: berth-broker, berth-agent and berth-cli (one nfpm YAML
// each), their systemd units, maintainer scripts (scripts/) and default
// configuration files for /etc/berth.
//
// The package has no code. Its tests check that the shipped configuration
// files list every key the programs read, with defaults the programs accept,
// that the units pass systemd-analyze verify, and, as root on Debian,
// install the packages on the machine, run the broker from the installed
// files and purge them again (install_test.go).
package packaging
