// Package storetest holds the tests of the state store's contract
// (broker.Store and the console's text index), run against every backend:
// the embedded SQLite store and PostgreSQL, a real server started for the
// test binary (internal/pgtest) with a database of its own per test.
//
// A test here states what every backend must answer; what only one
// backend can get wrong (SQLite's file modes and older files, PostgreSQL's
// migrations, notifications and text encoding) is tested in that
// backend's package. The package has no code outside its tests.
package storetest
