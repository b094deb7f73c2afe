// Package webdriver drives a headless Chromium from Go tests over the W3C
// WebDriver HTTP protocol, through Debian's chromedriver, so that browser
// tests of the web console live next to the real OpenSSH and sshd
// orchestration instead of in a JavaScript test runner.
//
// It is a test helper: every method takes its failure to the test with
// t.Fatalf and a message naming the command, so that a test reads as a
// script of what a user does. Start registers a cleanup that ends the
// session and kills chromedriver's whole process group, so no Chromium
// outlives its test.
//
// Guarantees a test can rely on:
//   - The browser is fresh: a new profile directory, no network access
//     beyond what the test serves (background networking, sync, component
//     updates and QUIC are off).
//   - A JavaScript dialog is never dismissed behind the test's back: the
//     session ignores unhandled prompts, so an alert an XSS payload opened
//     stays visible to AlertText, and any other command fails with
//     "unexpected alert open" and the alert's text.
//   - Waiting is on conditions with a deadline (Wait, Find, WaitText,
//     WaitURL), 10 s scaled by SEKISHO_TEST_TIMEOUT_SCALE; nothing sleeps.
//
// Without /usr/bin/chromedriver the test fails, unless SEKISHO_NO_BROWSER=1
// says browser tests are knowingly skipped on this machine.
package webdriver
