// openapi_test.go: every exchange the HTTP tests make with a test server is
// checked against openapi.json (the document the server serves), and the
// suite must produce every status the document promises.
//
// The test server's client (helpers_test.go) sends through specCheck, so no
// test can skip it: a response the document does not allow, or a request
// the server accepted that the document does not, fails the test that made
// it. After a whole run, TestMain (backends_test.go) fails when an
// operation, or a documented status of one, was never seen.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/gorillamux"
)

// apiSpec is openapi.json, loaded and checked once for every test server.
var apiSpec struct {
	once   sync.Once
	doc    *openapi3.T
	router routers.Router
	err    error
}

// loadAPISpec returns the embedded document and a router over it.
func loadAPISpec() (*openapi3.T, routers.Router, error) {
	apiSpec.once.Do(func() {
		loader := openapi3.NewLoader()
		doc, err := loader.LoadFromData(openapiJSON)
		if err != nil {
			apiSpec.err = fmt.Errorf("load openapi.json: %w", err)
			return
		}
		if err := doc.Validate(loader.Context); err != nil {
			apiSpec.err = fmt.Errorf("openapi.json is not a valid OpenAPI document: %w", err)
			return
		}
		// Route on the path alone: the document's server is "/", and a
		// test may send any Host (403 tests send foreign ones).
		routed := *doc
		routed.Servers = nil
		if !usesJSONSchema2020Keywords(openapiJSON) {
			// For an OpenAPI 3.1 document, kin-openapi v0.153.0 compiles a
			// JSON Schema 2020-12 validator for each schema on every call
			// (over 1 ms a response: the suite took twice as long), and for
			// a schema that refers to a component and has no keyword only
			// 2020-12 knows, which is every body schema here, it then
			// validates with its OpenAPI 3.0 visitor all the same. Marking
			// the routes' copy 3.0 sends every schema straight to that
			// visitor. The document itself was validated as 3.1 above; one
			// that uses a 2020-12-only keyword keeps the exact, slow path.
			routed.OpenAPI = "3.0.3"
		}
		router, err := gorillamux.NewRouter(&routed)
		if err != nil {
			apiSpec.err = fmt.Errorf("route openapi.json: %w", err)
			return
		}
		apiSpec.doc, apiSpec.router = doc, router
	})
	return apiSpec.doc, apiSpec.router, apiSpec.err
}

// jsonSchema2020Keywords are the keywords for which kin-openapi keeps its
// JSON Schema 2020-12 validator rather than its OpenAPI 3.0 one.
var jsonSchema2020Keywords = []string{"const", "prefixItems", "contains", "patternProperties",
	"dependentSchemas", "propertyNames", "unevaluatedItems", "unevaluatedProperties",
	"if", "then", "else", "dependentRequired", "$defs", "contentSchema"}

// usesJSONSchema2020Keywords reports whether any object in the JSON
// document doc has one of jsonSchema2020Keywords as a key (a property of
// that name counts too: that only costs speed).
func usesJSONSchema2020Keywords(doc []byte) bool {
	var v any
	if err := json.Unmarshal(doc, &v); err != nil {
		return true
	}
	var walk func(v any) bool
	walk = func(v any) bool {
		switch v := v.(type) {
		case map[string]any:
			for k, child := range v {
				if slices.Contains(jsonSchema2020Keywords, k) || walk(child) {
					return true
				}
			}
		case []any:
			return slices.ContainsFunc(v, walk)
		}
		return false
	}
	return walk(v)
}

// specOptions are the validator's options: every problem at once, a status
// the document does not list is an error, and a request is checked as sent
// (no defaults filled in, no authentication run).
// Schema errors are told by where and why, without the schema and value
// dumps of the default message.
var specOptions = func() *openapi3filter.Options {
	o := &openapi3filter.Options{
		AuthenticationFunc:    openapi3filter.NoopAuthenticationFunc,
		IncludeResponseStatus: true,
		MultiError:            true,
		SkipSettingDefaults:   true,
	}
	o.WithCustomSchemaErrorFunc(func(err *openapi3.SchemaError) string {
		msg := err.Reason
		if msg == "" {
			msg = "does not match the schema's " + err.SchemaField
		}
		if p := err.JSONPointer(); len(p) > 0 {
			msg = "at /" + strings.Join(p, "/") + ": " + msg
		}
		return msg
	})
	return o
}()

// ---- what the suite has seen ----

// specSeen records, process-wide, each (operationId, status) some test
// received.
var specSeen struct {
	mu   sync.Mutex
	seen map[string]map[int]bool
}

func recordSeen(op string, status int) {
	specSeen.mu.Lock()
	defer specSeen.mu.Unlock()
	if specSeen.seen == nil {
		specSeen.seen = map[string]map[int]bool{}
	}
	if specSeen.seen[op] == nil {
		specSeen.seen[op] = map[int]bool{}
	}
	specSeen.seen[op][status] = true
}

// specCoverage lists what the document promises and the suite never
// produced: operations never called, then (operation, status) pairs never
// answered. `default` (500, anything unexpected) is not a status to
// produce. It also returns how many pairs are documented and seen.
func specCoverage() (missing []string, documented, seen int, err error) {
	doc, _, err := loadAPISpec()
	if err != nil {
		return nil, 0, 0, err
	}
	specSeen.mu.Lock()
	defer specSeen.mu.Unlock()
	for _, path := range doc.Paths.InMatchingOrder() {
		for method, op := range doc.Paths.Value(path).Operations() {
			got := specSeen.seen[op.OperationID]
			if len(got) == 0 {
				missing = append(missing, fmt.Sprintf("%s (%s %s): never called", op.OperationID, method, path))
			}
			var never []string
			for code := range op.Responses.Map() {
				if code == "default" {
					continue
				}
				documented++
				status, _ := strconv.Atoi(code)
				if got[status] {
					seen++
				} else {
					never = append(never, code)
				}
			}
			if len(never) > 0 && len(got) > 0 {
				slices.Sort(never)
				missing = append(missing, fmt.Sprintf("%s (%s %s): never answered %s", op.OperationID, method, path, strings.Join(never, ", ")))
			}
		}
	}
	slices.Sort(missing)
	return missing, documented, seen, nil
}

// wholeSuiteRun reports a run of every test: no -run or -skip filter, not
// -short, no list, no fuzzing or benchmarking. Only such a run can be
// asked to cover the document.
func wholeSuiteRun() bool {
	for _, name := range []string{"test.run", "test.skip", "test.list"} {
		if f := flag.Lookup(name); f != nil && f.Value.String() != "" {
			return false
		}
	}
	return !testing.Short() && !fuzzingOrBenchmarking()
}

// checkSpecCoverage prints the coverage of the document by the suite and
// returns 1 when something documented was never produced.
func checkSpecCoverage() int {
	missing, documented, seen, err := specCoverage()
	if err != nil {
		fmt.Println("FAIL: openapi coverage:", err)
		return 1
	}
	fmt.Printf("openapi coverage: %d of %d documented (operation, status) pairs produced by the tests\n", seen, documented)
	if len(missing) == 0 {
		return 0
	}
	fmt.Println("FAIL: openapi coverage: the tests never produced these documented answers (write a test that does, or take the status out of openapi.yaml if the server cannot answer it):")
	for _, m := range missing {
		fmt.Println("  " + m)
	}
	return 1
}

// ---- the validating transport ----

// specTestKey keys, in a request's context, the test that sent it (set by
// testServer.send), so a problem fails that test rather than the one that
// started the server.
type specTestKey struct{}

// withTest returns req carrying t as the test to fail.
func withTest(req *http.Request, t testing.TB) *http.Request {
	return req.WithContext(context.WithValue(req.Context(), specTestKey{}, t))
}

// specCheck is an http.RoundTripper that checks each exchange against the
// document. owner is the test that started the server: the one failed when
// the request does not name its own test.
type specCheck struct {
	base  http.RoundTripper
	owner testing.TB
}

func (c *specCheck) RoundTrip(req *http.Request) (*http.Response, error) {
	sent := captureBody(req)
	resp, err := c.base.RoundTrip(req)
	if err != nil {
		return resp, err
	}
	// Room for the whole body and the MinRead that ReadFrom asks before it
	// sees the end: a page of 4 MiB is then never copied.
	buf := bytes.NewBuffer(make([]byte, 0, max(resp.ContentLength, 0)+bytes.MinRead))
	_, readErr := buf.ReadFrom(resp.Body)
	resp.Body.Close()
	body := buf.Bytes()
	if readErr != nil {
		// Cut short (the connection went away): hand the test what came
		// and the error, and judge nothing.
		resp.Body = io.NopCloser(io.MultiReader(bytes.NewReader(body), errorReader{readErr}))
		return resp, nil
	}
	resp.Body = &readBody{Reader: bytes.NewReader(body), body: body}
	t, ok := req.Context().Value(specTestKey{}).(testing.TB)
	if !ok {
		t = c.owner
	}
	got := &http.Response{StatusCode: resp.StatusCode, Header: resp.Header.Clone()}
	check := func() {
		if problem := checkExchange(req, sent(), got, body); problem != "" {
			t.Errorf("%s %s → %d: the exchange breaks openapi.json: %s\nresponse body: %s", req.Method, req.URL.RequestURI(), got.StatusCode, problem, clip(body))
		}
	}
	if p, ok := specHeld.Load(t); ok {
		p.(*pendingChecks).add(check)
		return resp, nil
	}
	check()
	return resp, nil
}

// specHeld holds, for a test that called holdSpecChecks, the checks of
// its exchanges still to run.
var specHeld sync.Map // testing.TB → *pendingChecks

type pendingChecks struct {
	mu     sync.Mutex
	checks []func()
}

func (p *pendingChecks) add(check func()) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.checks = append(p.checks, check)
}

// holdSpecChecks postpones the document check of t's exchanges until
// release is called (or t ends), for a test that measures the process's
// heap around a request: the check decodes the whole body. They are
// checked all the same, and a problem fails t.
func holdSpecChecks(t testing.TB) (release func()) {
	p := &pendingChecks{}
	specHeld.Store(t, p)
	var once sync.Once
	release = func() {
		once.Do(func() {
			specHeld.Delete(t)
			p.mu.Lock()
			defer p.mu.Unlock()
			for _, check := range p.checks {
				check()
			}
		})
	}
	t.Cleanup(release)
	return release
}

// readBody is a response body already read whole; testServer.send takes
// its bytes rather than copying them again.
type readBody struct {
	*bytes.Reader
	body []byte
}

func (b *readBody) Close() error { return nil }

// errorReader fails every read with err.
type errorReader struct{ err error }

func (r errorReader) Read([]byte) (int, error) { return 0, r.err }

// captureBody returns a function giving the request body as sent: a copy
// from GetBody when the request has one (a string or bytes body), else
// what the transport read through a recording reader.
func captureBody(req *http.Request) func() []byte {
	if req.Body == nil || req.Body == http.NoBody {
		return func() []byte { return nil }
	}
	if req.GetBody != nil {
		return func() []byte {
			rc, err := req.GetBody()
			if err != nil {
				return nil
			}
			defer rc.Close()
			b, _ := io.ReadAll(rc)
			return b
		}
	}
	rec := &recordingBody{ReadCloser: req.Body}
	req.Body = rec
	return rec.bytes
}

// recordingBody keeps up to 2 MiB of what is read through it. The
// transport reads it on its own goroutine, hence the lock.
type recordingBody struct {
	io.ReadCloser
	mu  sync.Mutex
	buf bytes.Buffer
}

func (r *recordingBody) Read(p []byte) (int, error) {
	n, err := r.ReadCloser.Read(p)
	r.mu.Lock()
	if r.buf.Len() < 2<<20 {
		r.buf.Write(p[:n])
	}
	r.mu.Unlock()
	return n, err
}

func (r *recordingBody) bytes() []byte {
	r.mu.Lock()
	defer r.mu.Unlock()
	return bytes.Clone(r.buf.Bytes())
}

// clip shortens a body for a failure message.
func clip(b []byte) string {
	if len(b) > 500 {
		return string(b[:500]) + "…"
	}
	return string(b)
}

// checkExchange judges one exchange; "" when the document allows it.
func checkExchange(req *http.Request, sent []byte, resp *http.Response, body []byte) string {
	if req.Method == http.MethodHead {
		return "" // the document describes no HEAD; net/http derives it from GET
	}
	if strings.HasPrefix(req.URL.Path, "/admin/") && resp.StatusCode < 400 {
		return "" // the admin page's files: HTML, CSS and JavaScript (its errors are JSON as anywhere)
	}
	_, router, err := loadAPISpec()
	if err != nil {
		return err.Error()
	}
	route, params, err := router.FindRoute(req)
	if err != nil {
		return checkUnrouted(req, resp, body, err)
	}
	route, params = userByUsernameRoute(route, params)
	op := route.Operation
	status := resp.StatusCode
	recordSeen(op.OperationID, status)
	if op.Responses.Status(status) == nil && status != http.StatusInternalServerError {
		// openapi3filter would accept it as the `default` response, which
		// is there for 500 only.
		return fmt.Sprintf("%s does not document status %d", op.OperationID, status)
	}
	ctx := context.Background()
	in := &openapi3filter.RequestValidationInput{Request: req, PathParams: params, Route: route, Options: specOptions}
	var problems []string
	if status < 400 {
		// The server accepted the request: the document must too.
		rin := *in
		rin.Request = req.Clone(ctx)
		rin.Request.Body = io.NopCloser(bytes.NewReader(sent))
		if err := openapi3filter.ValidateRequest(ctx, &rin); err != nil {
			problems = append(problems, "request: "+describe(err))
		}
	}
	if status == http.StatusNotModified {
		problems = append(problems, checkNotModified(resp, body)...)
	} else {
		out := &openapi3filter.ResponseValidationInput{RequestValidationInput: in, Status: status, Header: resp.Header, Options: specOptions}
		out.SetBodyBytes(body)
		if err := openapi3filter.ValidateResponse(ctx, out); err != nil {
			problems = append(problems, "response: "+describe(err))
		}
	}
	return strings.Join(problems, "; ")
}

// userByUsernameRoute settles the one path two operations share:
// /api/users/by-username/goals matches both GET /api/users/{id}/goals and
// GET /api/users/by-username/{username}, and the service serves it as the
// latter (ids are UUIDs, so "by-username" is never one).
func userByUsernameRoute(route *routers.Route, params map[string]string) (*routers.Route, map[string]string) {
	const byUsername = "/api/users/by-username/{username}"
	if route.Path != "/api/users/{id}/goals" || params["id"] != "by-username" {
		return route, params
	}
	item := route.Spec.Paths.Value(byUsername)
	op := item.GetOperation(route.Method)
	if op == nil {
		return route, params
	}
	r := *route
	r.Path, r.PathItem, r.Operation = byUsername, item, op
	return &r, map[string]string{"username": "goals"}
}

// etagPattern is the document's ETag header pattern.
var etagPattern = regexp.MustCompile(`^"[\x21\x23-\x7E]*"$`)

// checkNotModified checks a 304 by hand (openapi3filter skips 304): the
// ETag repeated, no body.
func checkNotModified(resp *http.Response, body []byte) []string {
	var problems []string
	if tag := resp.Header.Get("ETag"); !etagPattern.MatchString(tag) {
		problems = append(problems, fmt.Sprintf("304 without a valid ETag (%q)", tag))
	}
	if len(body) > 0 {
		problems = append(problems, "304 with a body")
	}
	if resp.Header.Get("X-Request-ID") == "" {
		problems = append(problems, "304 without X-Request-ID")
	}
	return problems
}

// checkUnrouted checks an answer to a request that names no operation of
// the document (an unknown path, 404; a wrong method, 405; or what the
// middleware answers first): a JSON {"error": "…"}, and for 405 an Allow.
func checkUnrouted(req *http.Request, resp *http.Response, body []byte, routeErr error) string {
	var problems []string
	if errors.Is(routeErr, routers.ErrMethodNotAllowed) && resp.StatusCode < 400 {
		problems = append(problems, fmt.Sprintf("a method the document does not have for this path was answered %d", resp.StatusCode))
	}
	if errors.Is(routeErr, routers.ErrPathNotFound) && resp.StatusCode < 300 {
		problems = append(problems, fmt.Sprintf("a path the document does not have was answered %d", resp.StatusCode))
	}
	if !strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
		problems = append(problems, fmt.Sprintf("Content-Type %q, want application/json", resp.Header.Get("Content-Type")))
	}
	var e map[string]any
	if err := json.Unmarshal(body, &e); err != nil {
		problems = append(problems, "the body is not a JSON object: "+err.Error())
	} else if _, ok := e["error"].(string); !ok || len(e) != 1 {
		problems = append(problems, `the body is not {"error": "…"}`)
	}
	if resp.StatusCode == http.StatusMethodNotAllowed && resp.Header.Get("Allow") == "" {
		problems = append(problems, "405 without Allow")
	}
	if len(problems) > 0 {
		return "(" + routeErr.Error() + ") " + strings.Join(problems, "; ")
	}
	return ""
}

// describe flattens a validator error (often a MultiError) to one line,
// keeping what each layer says (which header, parameter or body).
func describe(err error) string {
	switch e := err.(type) {
	case *openapi3filter.ResponseError:
		if e.Err != nil {
			return e.Reason + ": " + describe(e.Err)
		}
	case *openapi3filter.RequestError:
		if e.Err != nil {
			what := e.Reason
			if e.Parameter != nil {
				what = strings.TrimSpace(fmt.Sprintf("parameter %q in %s %s", e.Parameter.Name, e.Parameter.In, what))
			} else if e.RequestBody != nil {
				what = strings.TrimSpace("body " + what)
			}
			return what + ": " + describe(e.Err)
		}
	case openapi3.MultiError:
		parts := make([]string, 0, len(e))
		for _, one := range e {
			parts = append(parts, describe(one))
		}
		return strings.Join(parts, " | ")
	}
	return strings.ReplaceAll(err.Error(), "\n", " ")
}

func TestSpecCheckCatchesWhatTheDocumentForbids(t *testing.T) {
	if usesJSONSchema2020Keywords(openapiJSON) {
		t.Log("openapi.json uses JSON Schema 2020-12-only keywords: validating on kin-openapi's exact, slow path")
	}
	const (
		id   = noSuchID
		when = "2026-11-25T11:42:41.123Z"
	)
	user := `{"user":{"id":"` + id + `","username":"zoe","created_at":"` + when + `","modified_at":"` + when + `"}}`
	jsonHeaders := func(kv ...string) http.Header {
		h := http.Header{"Content-Type": {"application/json"}, "X-Request-Id": {"abc"}, "Etag": {`"x-y"`}}
		for i := 0; i+1 < len(kv); i += 2 {
			if kv[i+1] == "" {
				h.Del(kv[i])
			} else {
				h.Set(kv[i], kv[i+1])
			}
		}
		return h
	}
	for _, c := range []struct {
		name, method, path, sent string
		status                   int
		header                   http.Header
		body                     string
		want                     string // a part of the problem; "" when allowed
	}{
		{"a user", "GET", "/api/users/" + id, "", 200, jsonHeaders(), user, ""},
		{"a user with ?show=email, none set", "GET", "/api/users/" + id + "?show=email", "", 200, jsonHeaders(),
			`{"user":{"id":"` + id + `","username":"zoe","email":null,"created_at":"` + when + `","modified_at":"` + when + `"}}`, ""},
		{"the user named goals", "GET", "/api/users/by-username/goals", "", 200, jsonHeaders(), user, ""},
		{"an unknown field", "GET", "/api/users/" + id, "", 200, jsonHeaders(),
			`{"user":{"id":"` + id + `","username":"zoe","password":"x","created_at":"` + when + `","modified_at":"` + when + `"}}`, "password"},
		{"a list for one", "GET", "/api/users/" + id, "", 200, jsonHeaders(), `[]`, "response"},
		{"a bad id", "GET", "/api/users", "", 200, jsonHeaders(), `[{"id":"x","username":"zoe","created_at":"` + when + `","modified_at":"` + when + `"}]`, "/0/id"},
		{"no ETag", "GET", "/api/users/" + id, "", 200, jsonHeaders("Etag", ""), user, "ETag"},
		{"a forged X-Request-ID", "GET", "/api/users/" + id, "", 200, jsonHeaders("X-Request-Id", "a b"), user, "X-Request-ID"},
		{"text", "GET", "/api/users/" + id, "", 200, jsonHeaders("Content-Type", "text/plain"), user, "Content-Type"},
		{"a status not listed", "GET", "/api/users", "", 418, jsonHeaders(), `{"error":"x"}`, "does not document status 418"},
		{"405 on an operation's own path is no operation's", "GET", "/api/users", "", 405, jsonHeaders(), `{"error":"x"}`, "405"},
		{"500 is the default", "GET", "/api/users", "", 500, jsonHeaders(), `{"error":"internal error"}`, ""},
		{"500 with detail", "GET", "/api/users", "", 500, jsonHeaders(), `{"error":"x","stack":"y"}`, "stack"},
		{"a 429 without Retry-After", "GET", "/api/users", "", 429, jsonHeaders(), `{"error":"x"}`, "Retry-After"},
		{"a 304", "GET", "/api/users", "", 304, jsonHeaders("Content-Type", ""), ``, ""},
		{"a 304 without ETag", "GET", "/api/users", "", 304, jsonHeaders("Etag", ""), ``, "ETag"},
		{"a 304 with a body", "GET", "/api/users", "", 304, jsonHeaders(), `[]`, "body"},
		{"an accepted body the document refuses", "PATCH", "/api/users/" + id, `{"username":"x"}`, 200, jsonHeaders(), user, "request"},
		{"a refused body is not judged", "PATCH", "/api/users/" + id, `{"username":"x"}`, 400, jsonHeaders(), `{"errors":{"username":"too short"}}`, ""},
		{"no such path", "GET", "/nope", "", 404, jsonHeaders(), `{"error":"not found"}`, ""},
		{"the admin page", "GET", "/admin/", "", 200, http.Header{"Content-Type": {"text/html; charset=utf-8"}}, "<!doctype html>", ""},
		{"no such admin file", "GET", "/admin/nope", "", 404, http.Header{"Content-Type": {"text/plain; charset=utf-8"}}, "404 page not found", "JSON"},
		{"no such path, in text", "GET", "/nope", "", 404, http.Header{}, "404 page not found", "JSON"},
		{"no such method", "DELETE", "/api/users", "", 405, jsonHeaders("Allow", "GET, HEAD, POST"), `{"error":"method not allowed"}`, ""},
		{"no such method, no Allow", "DELETE", "/api/users", "", 405, jsonHeaders(), `{"error":"method not allowed"}`, "Allow"},
		{"no such method, answered 200", "DELETE", "/api/users", "", 200, jsonHeaders(), `{"error":"x"}`, "answered 200"},
	} {
		t.Run(c.name, func(t *testing.T) {
			req, err := http.NewRequest(c.method, "http://localhost"+c.path, strings.NewReader(c.sent))
			if err != nil {
				t.Fatal(err)
			}
			if c.sent != "" {
				req.Header.Set("Content-Type", "application/json")
			}
			got := checkExchange(req, []byte(c.sent), &http.Response{StatusCode: c.status, Header: c.header}, []byte(c.body))
			switch {
			case c.want == "" && got != "":
				t.Fatalf("refused: %s", got)
			case c.want != "" && !strings.Contains(got, c.want):
				t.Fatalf("problem %q, want one naming %q", got, c.want)
			}
		})
	}
}
