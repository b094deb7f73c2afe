package web

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"net/http"
	"strings"
	"time"

	"github.com/sekisho/sekisho/internal/units"
)

// pageTemplate is one page: the layout and the page's own blocks.
type pageTemplate struct{ t *template.Template }

var funcs = template.FuncMap{
	"time": func(t time.Time) string {
		if t.IsZero() {
			return ""
		}
		return t.UTC().Format("2006-01-02 15:04:05Z")
	},
	"date": func(t time.Time) string { return t.UTC().Format("2006-01-02") },
	"duration": func(a, b time.Time) string {
		if b.IsZero() {
			return "live"
		}
		return b.Sub(a).Round(time.Second).String()
	},
	"bytes": units.Bytes,
	"join":  strings.Join,
	"add":   func(a, b int) int { return a + b },
	"seconds": func(f float64) string {
		d := time.Duration(f * float64(time.Second)).Round(time.Second)
		return fmt.Sprintf("%d:%02d", int(d.Minutes()), int(d.Seconds())%60)
	},
}

// parsePages parses every page with the layout.
func parsePages() (map[string]*pageTemplate, error) {
	layout, err := fs.ReadFile(files, "templates/layout.html")
	if err != nil {
		return nil, err
	}
	names, err := fs.Glob(files, "templates/*.html")
	if err != nil {
		return nil, err
	}
	out := map[string]*pageTemplate{}
	for _, n := range names {
		base := strings.TrimPrefix(n, "templates/")
		if base == "layout.html" {
			continue
		}
		body, err := fs.ReadFile(files, n)
		if err != nil {
			return nil, err
		}
		t, err := template.New("layout").Funcs(funcs).Parse(string(layout))
		if err == nil {
			_, err = t.Parse(string(body))
		}
		if err != nil {
			return nil, fmt.Errorf("web: template %s: %w", base, err)
		}
		out[base] = &pageTemplate{t: t}
	}
	return out, nil
}

// pageData is what every page sees.
type pageData struct {
	Me    *person
	CSRF  string
	Path  string
	Title string
	Data  any
	// SSO names the identity provider the sign-in page offers, or is "".
	SSO string
}

// render writes page name; p is nil on the sign-in pages.
func (s *Server) render(w http.ResponseWriter, r *http.Request, name string, p *person, data any) {
	s.renderCSRF(w, r, name, p, "", data)
}

func (s *Server) renderCSRF(w http.ResponseWriter, r *http.Request, name string, p *person, csrf string, data any) {
	s.renderPart(w, r, name, "layout", p, csrf, data)
}

// renderPart writes the template part of page name: "layout" for the
// whole page, or a part the page defines, which a page script fetches to
// refresh itself.
func (s *Server) renderPart(w http.ResponseWriter, r *http.Request, name, part string, p *person, csrf string, data any) {
	pt, ok := s.pages[name]
	if !ok {
		panic("web: no page " + name)
	}
	var buf bytes.Buffer
	if err := pt.t.ExecuteTemplate(&buf, part, pageData{Me: p, CSRF: csrf, Path: r.URL.Path, Data: data, SSO: s.ssoName()}); err != nil {
		s.log.Error("web: page failed", "page", name, "err", err)
		http.Error(w, "the page could not be made; the error is in the server log", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.Write(buf.Bytes())
}

// httpError is an error with the status it answers.
type httpError struct {
	code int
	msg  string
	// audited is set when the refusal is in the audit log already, with
	// the reason it hides from the person (another residency).
	audited bool
}

func (e *httpError) Error() string { return e.msg }

func errorf(code int, format string, args ...any) error {
	return &httpError{code: code, msg: fmt.Sprintf(format, args...)}
}

// view makes the data of a page or API answer.
type view func(w http.ResponseWriter, r *request) (any, error)

// page serves a view as an HTML page.
func (s *Server) page(name string, v view) http.HandlerFunc {
	return s.pagePart(name, "layout", v)
}

// pagePart serves a view as part of page name: "layout" for the whole
// page, or a part it defines, for the page's script to refresh that part
// with.
func (s *Server) pagePart(name, part string, v view) http.HandlerFunc {
	return s.authed(false, func(w http.ResponseWriter, r *request) {
		data, err := v(w, r)
		if err != nil {
			s.fail(w, r, false, err)
			return
		}
		if data == nil { // the view answered itself (a redirect)
			return
		}
		s.renderPart(w, r.Request, name, part, r.p, r.csrf, data)
	})
}

// api serves a view as JSON.
func (s *Server) api(v view) http.HandlerFunc {
	return s.authed(true, func(w http.ResponseWriter, r *request) {
		data, err := v(w, r)
		if err != nil {
			s.fail(w, r, true, err)
			return
		}
		if data == nil {
			return
		}
		writeJSON(w, http.StatusOK, data)
	})
}

// fail answers a view's error: a refusal as it is (and audited), anything
// else as an internal failure, logged.
func (s *Server) fail(w http.ResponseWriter, r *request, api bool, err error) {
	var he *httpError
	if errors.As(err, &he) {
		if !he.audited && (he.code == http.StatusForbidden || he.code == http.StatusNotFound || he.code == http.StatusConflict) {
			s.refuse(w, r.Request, r.p, api, he.code, he.msg)
			return
		}
		if api {
			writeJSONError(w, he.code, he.msg)
			return
		}
		w.WriteHeader(he.code)
		s.renderCSRF(w, r.Request, "error.html", r.p, r.csrf, map[string]any{"Code": he.code, "Message": he.msg})
		return
	}
	s.log.Error("web: request failed", "path", r.URL.Path, "technician", r.p.Name, "err", err)
	msg := "the request failed; the error is in the server log"
	if api {
		writeJSONError(w, http.StatusInternalServerError, msg)
		return
	}
	w.WriteHeader(http.StatusInternalServerError)
	s.renderCSRF(w, r.Request, "error.html", r.p, r.csrf, map[string]any{"Code": 500, "Message": msg})
}

// writeJSON answers v as JSON, or 500 if it cannot be encoded (a time
// past year 9999): an answer is never cut off half-written.
func writeJSON(w http.ResponseWriter, code int, v any) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		code = http.StatusInternalServerError
		buf.Reset()
		fmt.Fprintf(&buf, "{\"error\": %q}\n", "the answer could not be encoded as JSON: "+err.Error())
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	w.Write(buf.Bytes())
}

func writeJSONError(w http.ResponseWriter, code int, msg string) {
	writeJSON(w, code, map[string]string{"error": msg})
}

// ssoName is the identity provider's name for the sign-in page, or "".
func (s *Server) ssoName() string {
	if s.sso == nil {
		return ""
	}
	return s.sso.cfg.Name
}
