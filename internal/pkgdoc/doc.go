// Package pkgdoc holds repository-wide guard tests: every package has a doc
// comment and every exported name is documented; the tests are
// self-contained; docs/architecture.md's package table matches the imports;
// no test sleeps a fixed time and then asserts (TestNoSleepThenAssert, with
// its //sleep-ok: allow-list). It has no non-test code.
package pkgdoc
