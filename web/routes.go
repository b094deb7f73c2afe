package web

import (
	"net/http"
)

// routes registers every page and API call. Pages and the API share their
// views, so that what a page shows and what the API answers cannot
// disagree, nor their access checks.
func (s *Server) routes() {
	m := http.NewServeMux()
	s.mux = m
	m.Handle("GET /assets/", http.StripPrefix("/assets/", s.assetHandler()))
	m.HandleFunc("GET /login/{token}", s.handleLinkPage)
	m.HandleFunc("POST /login", s.handleSignIn)
	m.HandleFunc("POST /logout", s.authed(false, s.handleSignOut))
	m.HandleFunc("GET /signed-out", s.handleSignedOut)
	if s.sso != nil {
		m.HandleFunc("GET /oidc/login", s.handleOIDCLogin)
		m.HandleFunc("GET /oidc/callback", s.handleOIDCCallback)
	}

	m.HandleFunc("GET /{$}", s.page("overview.html", s.overview))
	m.HandleFunc("GET /overview/live", s.pagePart("overview.html", "overview-live", s.overviewLive))
	m.HandleFunc("GET /sessions", s.page("sessions.html", s.sessionList))
	m.HandleFunc("GET /sessions/{id}", s.page("session.html", s.sessionDetail))
	m.HandleFunc("GET /sessions/{id}/live", s.page("live.html", s.sessionDetail))
	m.HandleFunc("POST /sessions/{id}/kill", s.page("", s.kill))
	m.HandleFunc("GET /sessions/{id}/moderate", s.page("moderate.html", s.moderation))
	m.HandleFunc("POST /sessions/{id}/moderate/{verb}", s.page("", s.moderate))
	m.HandleFunc("GET /requests", s.page("requests.html", s.requestList))
	m.HandleFunc("POST /requests/{id}/{verb}", s.page("", s.decide))
	m.HandleFunc("GET /locks", s.page("locks.html", s.lockList))
	m.HandleFunc("POST /locks", s.page("", s.addLock))
	m.HandleFunc("POST /locks/{id}/remove", s.page("", s.removeLock))
	m.HandleFunc("GET /reports/cross-border", s.page("report.html", s.crossBorder))
	m.HandleFunc("GET /reports/cross-border.csv", s.authed(false, s.crossBorderCSV))

	m.HandleFunc("GET /api/me", s.api(s.me))
	m.HandleFunc("GET /api/overview", s.api(s.overview))
	m.HandleFunc("GET /api/sessions", s.api(s.sessionList))
	m.HandleFunc("GET /api/sessions/{id}", s.api(s.sessionDetail))
	m.HandleFunc("GET /api/sessions/{id}/cast", s.authed(true, s.cast))
	m.HandleFunc("GET /api/sessions/{id}/timeline", s.api(s.timeline))
	m.HandleFunc("GET /api/sessions/{id}/live", s.authed(true, s.live))
	m.HandleFunc("POST /api/sessions/{id}/kill", s.api(s.kill))
	m.HandleFunc("GET /api/sessions/{id}/moderate", s.api(s.moderationState))
	m.HandleFunc("GET /api/sessions/{id}/moderate/live", s.authed(true, s.moderateLive))
	m.HandleFunc("POST /api/sessions/{id}/moderate/{verb}", s.api(s.moderate))
	m.HandleFunc("GET /api/requests", s.api(s.requestList))
	m.HandleFunc("POST /api/requests/{id}/{verb}", s.api(s.decide))
	m.HandleFunc("GET /api/locks", s.api(s.lockList))
	m.HandleFunc("POST /api/locks", s.api(s.addLock))
	m.HandleFunc("DELETE /api/locks/{id}", s.api(s.removeLock))
	m.HandleFunc("GET /api/reports/cross-border", s.api(s.crossBorder))
}

// assetHandler serves the embedded stylesheet and scripts, cacheable.
func (s *Server) assetHandler() http.Handler {
	fsrv := http.FileServerFS(s.assets)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "public, max-age=3600")
		fsrv.ServeHTTP(w, r)
	})
}

// wantsJSON reports whether a request came in through the API.
func wantsJSON(r *request) bool { return len(r.URL.Path) >= 5 && r.URL.Path[:5] == "/api/" }
