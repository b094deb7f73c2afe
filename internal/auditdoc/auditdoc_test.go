package auditdoc

import (
	"bytes"
	"flag"
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite docs/AUDIT.md from broker/events.go")

// auditHelpers are the functions that take an event kind as their second
// argument (after the context).
var auditHelpers = map[string]bool{"audit": true, "transition": true}

const (
	eventsFile = "../../broker/events.go"
	docFile    = "../../docs/AUDIT.md"
	root       = "../.."
)

func kinds(t *testing.T) []Section {
	t.Helper()
	src, err := os.ReadFile(eventsFile)
	if err != nil {
		t.Fatal(err)
	}
	secs, err := Parse(src)
	if err != nil {
		t.Fatalf("broker/events.go: %v", err)
	}
	return secs
}

// docs/AUDIT.md is what broker/events.go says.
func TestAuditDoc(t *testing.T) {
	want := Render(kinds(t))
	if *update {
		if err := os.WriteFile(docFile, want, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	got, err := os.ReadFile(docFile)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatal("docs/AUDIT.md is not what broker/events.go says: run `go generate ./broker` and commit the result")
	}
}

// sources calls fn with every non-test Go file of the module outside
// broker/events.go and this package.
func sources(t *testing.T, fn func(path string, fset *token.FileSet, f *ast.File)) {
	t.Helper()
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			switch d.Name() {
			case "node_modules", "tools", "testdata", ".git", "auditdoc":
				return filepath.SkipDir
			}
			return nil
		}
		rel, _ := filepath.Rel(root, p)
		if !strings.HasSuffix(p, ".go") || strings.HasSuffix(p, "_test.go") || rel == "broker/events.go" {
			return nil
		}
		fset := token.NewFileSet()
		f, err := parser.ParseFile(fset, p, nil, 0)
		if err != nil {
			return err
		}
		fn(rel, fset, f)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// Every kind written is a constant of broker/events.go: no AuditEvent
// literal takes a kind written as a string, no audit helper is passed
// one, nothing outside events.go converts to EventKind, and no string
// anywhere else spells a kind; and every constant there is written
// somewhere. (Without type checking, a string given to another function
// that takes an EventKind would pass: keep kinds going through
// AuditEvent literals and the helpers below.)
func TestEveryAuditKindIsAConstant(t *testing.T) {
	byName := map[string]string{} // kind → constant
	for _, s := range kinds(t) {
		for _, k := range s.Kinds {
			byName[k.Name] = k.Const
		}
	}
	used := map[string]bool{}
	sources(t, func(path string, fset *token.FileSet, f *ast.File) {
		ast.Inspect(f, func(n ast.Node) bool {
			switch n := n.(type) {
			case *ast.Ident:
				used[n.Name] = true
			case *ast.BasicLit:
				if n.Kind != token.STRING {
					break
				}
				v, _ := strconv.Unquote(n.Value)
				if c, ok := byName[v]; ok && strings.Contains(v, ".") {
					t.Errorf("%s: the kind %q is spelled out; use broker.%s", fset.Position(n.Pos()), v, c)
				}
			case *ast.CallExpr:
				name := ""
				switch fn := n.Fun.(type) {
				case *ast.Ident:
					name = fn.Name
				case *ast.SelectorExpr:
					name = fn.Sel.Name
				}
				if name == "EventKind" {
					t.Errorf("%s: a conversion to EventKind; add a constant to broker/events.go", fset.Position(n.Pos()))
				}
				if auditHelpers[name] && len(n.Args) > 1 {
					if lit, ok := n.Args[1].(*ast.BasicLit); ok && lit.Kind == token.STRING {
						t.Errorf("%s: %s is given the kind %s as a string; add a constant to broker/events.go", fset.Position(lit.Pos()), name, lit.Value)
					}
				}
			case *ast.CompositeLit:
				typ, _ := n.Type.(*ast.SelectorExpr)
				id, _ := n.Type.(*ast.Ident)
				if (typ == nil || typ.Sel.Name != "AuditEvent") && (id == nil || id.Name != "AuditEvent") {
					break
				}
				for _, e := range n.Elts {
					if kv, ok := e.(*ast.KeyValueExpr); ok && kv.Key.(*ast.Ident).Name == "Kind" {
						if _, lit := kv.Value.(*ast.BasicLit); lit {
							t.Errorf("%s: an audit event's kind is a string; add a constant to broker/events.go", fset.Position(kv.Pos()))
						}
					}
				}
			}
			return true
		})
	})
	for name, c := range byName {
		if !used[c] {
			t.Errorf("broker.%s (%q) is documented but never written", c, name)
		}
	}
}
