package webdriver

import (
	"encoding/json"
	"net/http"
	"net/url"
	"strconv"
	"strings"
)

// elementKey is the W3C name under which a web element reference travels.
const elementKey = "element-6066-11e4-a52e-4f735466cecf"

// Element is a reference to a DOM element of the current page. It goes stale
// when the page navigates or the element is removed; commands on it then
// fail with "stale element reference".
type Element struct {
	b   *Browser
	id  string
	css string // for messages
}

// MarshalJSON makes an Element passed to Exec arrive as the DOM element.
func (e *Element) MarshalJSON() ([]byte, error) {
	return json.Marshal(map[string]string{elementKey: e.id})
}

// findAll asks for the elements matching css without failing the test.
func (b *Browser) findAll(css string) ([]*Element, error) {
	var refs []map[string]string
	query := map[string]string{"using": "css selector", "value": css}
	if err := b.call(http.MethodPost, b.base+"/elements", query, &refs); err != nil {
		return nil, err
	}
	elements := make([]*Element, len(refs))
	for i, ref := range refs {
		elements[i] = &Element{b: b, id: ref[elementKey], css: css}
	}
	return elements, nil
}

// Find waits until an element matches css and returns the first one.
func (b *Browser) Find(css string) *Element {
	b.t.Helper()
	var found []*Element
	Wait(b.t, "element "+css, func() bool {
		elements, err := b.findAll(css)
		if err != nil && !isCode(err, "no such element") {
			b.t.Fatalf("browser find %s: %v", css, err)
		}
		found = elements
		return len(found) > 0
	})
	return found[0]
}

// FindAll returns the elements matching css now, possibly none.
func (b *Browser) FindAll(css string) []*Element {
	b.t.Helper()
	elements, err := b.findAll(css)
	if err != nil {
		b.t.Fatalf("browser find all %s: %v", css, err)
	}
	return elements
}

// WaitText waits until the first element matching css has text containing
// substring; the element may appear, or be replaced, while waiting.
func (b *Browser) WaitText(css, substring string) {
	b.t.Helper()
	Wait(b.t, "text "+strconv.Quote(substring)+" in "+css, func() bool {
		elements, err := b.findAll(css)
		if err != nil || len(elements) == 0 {
			return false
		}
		text, err := elements[0].text()
		return err == nil && strings.Contains(text, substring)
	})
}

func (e *Element) must(what, method, path string, body, result any) {
	e.b.t.Helper()
	if err := e.b.call(method, e.b.base+"/element/"+e.id+path, body, result); err != nil {
		e.b.t.Fatalf("browser %s %s: %v", what, e.css, err)
	}
}

// Click clicks the element's centre, scrolling it into view first; it fails
// if another element would receive the click.
func (e *Element) Click() {
	e.b.t.Helper()
	e.must("click", http.MethodPost, "/click", struct{}{}, nil)
}

func (e *Element) text() (string, error) {
	var text string
	err := e.b.call(http.MethodGet, e.b.base+"/element/"+e.id+"/text", nil, &text)
	return text, err
}

// Text is the element's rendered text, as a user sees it (innerText).
func (e *Element) Text() string {
	e.b.t.Helper()
	text, err := e.text()
	if err != nil {
		e.b.t.Fatalf("browser text %s: %v", e.css, err)
	}
	return text
}

// Attr is the element's HTML attribute name, "" when it is absent.
func (e *Element) Attr(name string) string {
	e.b.t.Helper()
	var value *string
	e.must("attribute "+name+" of", http.MethodGet, "/attribute/"+url.PathEscape(name), nil, &value)
	if value == nil {
		return ""
	}
	return *value
}

// Property is the element's DOM property name, such as "value" or
// "checked", decoded from JSON.
func (e *Element) Property(name string) any {
	e.b.t.Helper()
	var value any
	e.must("property "+name+" of", http.MethodGet, "/property/"+url.PathEscape(name), nil, &value)
	return value
}

// Type focuses the element and types text into it as key presses, after
// what it already holds.
func (e *Element) Type(text string) {
	e.b.t.Helper()
	e.must("type into", http.MethodPost, "/value", map[string]string{"text": text}, nil)
}

// Clear empties an input or textarea.
func (e *Element) Clear() {
	e.b.t.Helper()
	e.must("clear", http.MethodPost, "/clear", struct{}{}, nil)
}
