// Package pkgdoc holds repository-wide guard tests: every package has a doc
// comment and every exported name is documented. It has no non-test code.
package pkgdoc
