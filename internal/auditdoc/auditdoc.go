// Package auditdoc writes docs/AUDIT.md, the reference of sekisho's
// audit log, from the kinds and comments of broker/events.go: the
// document cannot drift from the code (its test compares them).
package auditdoc

import (
	"bytes"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"strconv"
	"strings"
)

// Kind is one event kind of broker/events.go.
type Kind struct {
	Const string // EventAuthFailed
	Name  string // auth.failed
	Doc   string // its comment, as text
	// Warning: syslog sends it with severity warning (events.go's
	// warnings), not notice.
	Warning bool
}

// Section is a group of kinds, as events.go groups them.
type Section struct {
	Title string
	Doc   string // the group's comment after its first sentence
	Kinds []Kind
}

// Parse reads the event kinds of events.go's source.
func Parse(src []byte) ([]Section, error) {
	fset := token.NewFileSet()
	f, err := parser.ParseFile(fset, "events.go", src, parser.ParseComments)
	if err != nil {
		return nil, err
	}
	warn, err := warnings(f)
	if err != nil {
		return nil, err
	}
	var out []Section
	for _, d := range f.Decls {
		g, ok := d.(*ast.GenDecl)
		if !ok || g.Tok != token.CONST {
			continue
		}
		// The group's first sentence is its title, the rest its text.
		title, rest, _ := strings.Cut(unwrap(g.Doc.Text()), ". ")
		sec := Section{Title: strings.TrimSuffix(title, "."), Doc: rest}
		for _, s := range g.Specs {
			vs := s.(*ast.ValueSpec)
			if len(vs.Names) != 1 || len(vs.Values) != 1 {
				return nil, fmt.Errorf("%s: one kind per line", fset.Position(vs.Pos()))
			}
			lit, ok := vs.Values[0].(*ast.BasicLit)
			if !ok || lit.Kind != token.STRING {
				return nil, fmt.Errorf("%s: %s is not a string constant", fset.Position(vs.Pos()), vs.Names[0].Name)
			}
			name, _ := strconv.Unquote(lit.Value)
			doc := unwrap(vs.Doc.Text())
			if doc == "" {
				return nil, fmt.Errorf("%s: %s has no comment saying what it means and which fields it fills", fset.Position(vs.Pos()), vs.Names[0].Name)
			}
			sec.Kinds = append(sec.Kinds, Kind{Const: vs.Names[0].Name, Name: name, Doc: doc, Warning: warn[vs.Names[0].Name]})
			delete(warn, vs.Names[0].Name)
		}
		out = append(out, sec)
	}
	for name := range warn {
		return nil, fmt.Errorf("warnings names %s, which is not a kind", name)
	}
	return out, nil
}

// warnings returns the constants listed in events.go's warnings map.
func warnings(f *ast.File) (map[string]bool, error) {
	out := map[string]bool{}
	for _, d := range f.Decls {
		g, ok := d.(*ast.GenDecl)
		if !ok || g.Tok != token.VAR {
			continue
		}
		for _, s := range g.Specs {
			vs := s.(*ast.ValueSpec)
			if len(vs.Names) != 1 || vs.Names[0].Name != "warnings" || len(vs.Values) != 1 {
				continue
			}
			cl, ok := vs.Values[0].(*ast.CompositeLit)
			if !ok {
				return nil, fmt.Errorf("warnings is not a map literal")
			}
			for _, e := range cl.Elts {
				kv, ok := e.(*ast.KeyValueExpr)
				id, isID := kv.Key.(*ast.Ident)
				if !ok || !isID {
					return nil, fmt.Errorf("warnings: each key must be a kind constant")
				}
				out[id.Name] = true
			}
			return out, nil
		}
	}
	return nil, fmt.Errorf("events.go has no warnings map")
}

// unwrap joins a comment's lines into paragraphs.
func unwrap(s string) string {
	var paras []string
	for _, p := range strings.Split(strings.TrimSpace(s), "\n\n") {
		paras = append(paras, strings.Join(strings.Fields(p), " "))
	}
	return strings.Join(paras, "\n\n")
}

// Render writes docs/AUDIT.md.
func Render(sections []Section) []byte {
	var b bytes.Buffer
	b.WriteString(header)
	b.WriteString("\n## Kinds\n\n")
	for _, s := range sections {
		fmt.Fprintf(&b, "- [%s](#%s):", s.Title, anchor(s.Title))
		for _, k := range s.Kinds {
			fmt.Fprintf(&b, " `%s`", k.Name)
		}
		b.WriteString("\n")
	}
	for _, s := range sections {
		fmt.Fprintf(&b, "\n### %s\n\n", s.Title)
		if s.Doc != "" {
			b.WriteString(s.Doc + "\n\n")
		}
		for i, k := range s.Kinds {
			if i > 0 {
				b.WriteString("\n")
			}
			mark := ""
			if k.Warning {
				mark = " *(warning)*"
			}
			fmt.Fprintf(&b, "#### `%s`%s\n\n%s\n", k.Name, mark, k.Doc)
		}
	}
	return b.Bytes()
}

// anchor is GitHub's anchor of a heading.
func anchor(title string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(title) {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9', r == '-', r == '_':
			b.WriteRune(r)
		case r == ' ':
			b.WriteRune('-')
		}
	}
	return b.String()
}

const header = `# The audit log

<!-- Generated from broker/events.go by ` + "`go generate ./broker`" + `; edit the comments there, not this file. -->

Every decision sekisho takes and everything it refuses is an audit event.
Events go to the state store (SQLite or PostgreSQL), where
` + "`sekisho audit`" + ` searches them (` + "`--kind session.*`" + `, ` + "`--technician`" + `,
` + "`--since 12h`" + `, ` + "`--grep`" + `, …); to the
node's structured log (` + "`msg=audit`" + `); and, when ` + "`audit.syslog`" + `
is configured, to a syslog collector in RFC 5424 form (below).

The audit log is a public interface. A kind keeps its name and the
meaning of its fields once released; new fields may appear in ` + "`detail`" + `,
and new kinds may be added. Parse JSON details by field name and ignore
fields you do not know.

## Fields of every event

| field | what it holds |
|---|---|
| ` + "`at`" + ` | when, RFC 3339 in UTC, to the nanosecond |
| ` + "`kind`" + ` | what happened: one of the kinds below |
| ` + "`technician`" + ` | the sekisho technician concerned (who connected, who acted); empty when not known |
| ` + "`target`" + ` | the target concerned, by its sekisho name |
| ` + "`source`" + ` | the client's address (host:port), a balancer's client address under the PROXY protocol; "web" or "cli" for actions in the console or on the command line |
| ` + "`session`" + ` | the session's id (the recording's name) |
| ` + "`detail`" + ` | the rest: JSON with the fields named below, or text for people |

` + "`sekisho audit`" + ` prints one event per line in this form:

` + "```json" + `
{"at":"2026-12-07T10:21:03.118Z","kind":"session.start","technician":"li","target":"db-jp-01","source":"203.0.113.9:50022","session":"0193a5c0-…","detail":"{\"affiliate\":\"ops-cn\",\"residency\":\"JP\",\"cross_border\":true,\"rule\":\"cross-border-approval\",\"login\":\"root\"}"}
` + "```" + `

## Syslog (RFC 5424)

With ` + "`audit.syslog`" + ` set, each node also sends every audit event to a
syslog collector as one RFC 5424 message:

` + "```" + `
<PRI>1 TIMESTAMP HOSTNAME sekisho PROCID KIND [sekisho@32473 technician="…" target="…" source="…" session="…"] {event as JSON}
` + "```" + `

- PRI is the configured facility (default ` + "`authpriv`" + `) with severity
  ` + "`warning`" + ` for the kinds marked *(warning)* below (refusals and
  failures), ` + "`notice`" + ` for the others.
- MSGID is the kind, so that a collector can route on it without parsing
  the message.
- The structured data element ` + "`sekisho@32473`" + ` repeats the event's
  non-empty fields other than ` + "`detail`" + `.
- The message is the event as ` + "`sekisho audit`" + ` prints it.

Transports: ` + "`udp://HOST:PORT`" + `, ` + "`tcp://HOST:PORT`" + ` and
` + "`tls://HOST:PORT`" + ` (octet-counted framing, RFC 6587 and RFC 5425), and
` + "`unix:///dev/log`" + `. The store stays the record: events are queued for
syslog (up to 10 000 per node) and sent in order by one sender that
reconnects when the collector comes back; an event the queue cannot take
is counted in ` + "`sekisho_audit_syslog_dropped_total`" + ` and logged, never
allowed to slow a session.
`
