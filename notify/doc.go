// Package notify tells webhooks about access-request events, so approvers
// hear of a request without watching the bastion, and about every
// cross-border session as it starts and ends, so security hears of it at
// once.
//
// Invariants:
//   - Notify never blocks or slows the broker: events go into a bounded
//     queue per webhook, and an event that does not fit is dropped, logged
//     and counted rather than waited for.
//   - Each webhook has one worker that delivers its events in order; a slow
//     or failing webhook delays only itself.
//   - Failures are retried with backoff when they may pass (5xx, 429,
//     network errors, timeouts) and never when they will not (other 4xx).
//     Every failure is logged and counted in the
//     sekisho_webhook_* metrics.
//   - A webhook's URL and headers may carry secrets: logs and errors name
//     the webhook, never its URL or headers.
package notify
