// Command ceiling is the yardstick of bench/run: the cheapest net/http
// server that answers each benchmark case with the exact bytes usersvc
// answered it (status, every header, body), captured from a running usersvc
// first. usersvc's throughput is reported as a ratio to this server's, both
// measured the same way in the same minutes, so the noise of a shared
// machine mostly cancels out.
//
// It is a separate program on purpose: it must share no code path with
// usersvc, only the standard library's net/http.
//
// Capture (asks a running usersvc each case once, writes the answers):
//
//	ceiling -capture http://127.0.0.1:8080 -cases cases.json -out capture.json
//
// Serve (answers every request with its case's captured response):
//
//	ceiling -addr 127.0.0.1:8081 -answers capture.json
//
// cases.json is a JSON array of cases:
//
//	{"name": "get_one", "method": "GET", "route": "/api/users/{id}",
//	 "target": "/api/users/0190…", "headers": {"Content-Type": "…"},
//	 "body": "…", "conditional": true}
//
// route is what the case matches when serving: an exact path, or a prefix
// ending in "{id}" (one non-empty path segment). target is the request
// sent to usersvc at capture. A conditional case is captured by reading
// target's ETag and then sending it back in If-None-Match (so its answer is
// usersvc's 304), and when serving it matches only requests that carry
// If-None-Match; the other cases match only requests that do not.
package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"strings"
	"time"
	"unicode/utf8"
)

// caseSpec is one benchmark case as the script describes it.
type caseSpec struct {
	Name        string            `json:"name"`
	Method      string            `json:"method"`
	Route       string            `json:"route"`
	Target      string            `json:"target"`
	Headers     map[string]string `json:"headers,omitempty"`
	Body        string            `json:"body,omitempty"`
	Conditional bool              `json:"conditional,omitempty"`
}

// answer is a case and usersvc's response to it, as the capture file holds
// them.
type answer struct {
	caseSpec
	Status       int                 `json:"status"`
	ReplyHeaders map[string][]string `json:"reply_headers"`
	ReplyBody    string              `json:"reply_body"`
	CapturedAt   string              `json:"captured_at"`
}

// Same shape as usersvc's production http.Server (main.go newHTTPServer).
const (
	readHeaderTimeout = 5 * time.Second
	readTimeout       = 30 * time.Second
	writeTimeout      = 60 * time.Second
	idleTimeout       = 120 * time.Second
	maxHeaderBytes    = 64 << 10
)

func main() {
	var (
		addr        = flag.String("addr", "127.0.0.1:8081", "listen address (serve mode)")
		answersFile = flag.String("answers", "", "capture file to serve (serve mode)")
		capture     = flag.String("capture", "", "base URL of a running usersvc to capture answers from (capture mode)")
		casesFile   = flag.String("cases", "", "cases to capture, a JSON array (capture mode)")
		out         = flag.String("out", "", "where to write the capture file (capture mode)")
	)
	flag.Parse()
	log.SetFlags(0)
	log.SetPrefix("ceiling: ")
	var err error
	switch {
	case *capture != "":
		if *casesFile == "" || *out == "" {
			log.Fatal("-capture needs -cases and -out")
		}
		err = runCapture(*capture, *casesFile, *out)
	case *answersFile != "":
		err = serve(*addr, *answersFile)
	default:
		flag.Usage()
		os.Exit(2)
	}
	if err != nil {
		log.Fatal(err)
	}
}

// runCapture sends each case to usersvc at base and writes what came back.
func runCapture(base, casesFile, out string) error {
	raw, err := os.ReadFile(casesFile)
	if err != nil {
		return err
	}
	var cases []caseSpec
	if err := json.Unmarshal(raw, &cases); err != nil {
		return fmt.Errorf("%s: %w", casesFile, err)
	}
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableCompression: true}}
	answers := make([]answer, 0, len(cases))
	for _, c := range cases {
		if c.Name == "" || c.Method == "" || c.Route == "" || c.Target == "" {
			return fmt.Errorf("case %+v: name, method, route and target are required", c)
		}
		headers := map[string]string{}
		for k, v := range c.Headers {
			headers[k] = v
		}
		if c.Conditional {
			resp, _, err := send(client, base, "GET", c.Target, nil, nil)
			if err != nil {
				return fmt.Errorf("case %s: %w", c.Name, err)
			}
			etag := resp.Header.Get("ETag")
			if etag == "" {
				return fmt.Errorf("case %s: GET %s answered %d without an ETag", c.Name, c.Target, resp.StatusCode)
			}
			headers["If-None-Match"] = etag
		}
		resp, body, err := send(client, base, c.Method, c.Target, headers, []byte(c.Body))
		if err != nil {
			return fmt.Errorf("case %s: %w", c.Name, err)
		}
		if resp.StatusCode >= 400 {
			return fmt.Errorf("case %s: %s %s answered %d: %s", c.Name, c.Method, c.Target, resp.StatusCode, body)
		}
		if !utf8.Valid(body) {
			return fmt.Errorf("case %s: the answer is not UTF-8 text", c.Name)
		}
		h := resp.Header.Clone()
		// net/http writes its own Date on every response.
		h.Del("Date")
		if len(resp.TransferEncoding) > 0 {
			return fmt.Errorf("case %s: answered with Transfer-Encoding %v; only Content-Length answers can be replayed", c.Name, resp.TransferEncoding)
		}
		answers = append(answers, answer{
			caseSpec: c, Status: resp.StatusCode, ReplyHeaders: h, ReplyBody: string(body),
			CapturedAt: time.Now().UTC().Format(time.RFC3339),
		})
	}
	b, err := json.MarshalIndent(answers, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(out, append(b, '\n'), 0o644)
}

// send makes one request and reads the whole answer.
func send(client *http.Client, base, method, target string, headers map[string]string, body []byte) (*http.Response, []byte, error) {
	var rd io.Reader
	if len(body) > 0 {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequest(method, strings.TrimRight(base, "/")+target, rd)
	if err != nil {
		return nil, nil, err
	}
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp, b, err
}

// route is one case made ready to serve: everything a response needs is
// built once, so answering costs only what net/http itself costs.
type route struct {
	method      string
	path        string // exact path, or the prefix before "{id}"
	prefix      bool
	conditional bool
	status      int
	header      http.Header // canonical keys; the value slices are shared
	body        []byte
}

// matches reports whether r is this route's case.
func (rt *route) matches(r *http.Request) bool {
	if r.Method != rt.method {
		return false
	}
	p := r.URL.Path
	if rt.prefix {
		if !strings.HasPrefix(p, rt.path) {
			return false
		}
		id := p[len(rt.path):]
		if id == "" || strings.IndexByte(id, '/') >= 0 {
			return false
		}
	} else if p != rt.path {
		return false
	}
	_, inm := r.Header["If-None-Match"]
	return inm == rt.conditional
}

// handler routes each request to its case by method, path and whether it
// is conditional, and answers the captured response.
type handler struct {
	routes []route
	health http.Header
}

var okBody = []byte("ok\n")

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	for i := range h.routes {
		rt := &h.routes[i]
		if rt.matches(r) {
			wh := w.Header()
			for k, v := range rt.header {
				wh[k] = v
			}
			w.WriteHeader(rt.status)
			if len(rt.body) > 0 {
				w.Write(rt.body) //nolint:errcheck // the client is gone
			}
			return
		}
	}
	if r.Method == http.MethodGet && r.URL.Path == "/healthz" {
		wh := w.Header()
		for k, v := range h.health {
			wh[k] = v
		}
		w.Write(okBody) //nolint:errcheck // the client is gone
		return
	}
	http.NotFound(w, r)
}

// loadRoutes reads a capture file.
func loadRoutes(file string) ([]route, error) {
	raw, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	var answers []answer
	if err := json.Unmarshal(raw, &answers); err != nil {
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	if len(answers) == 0 {
		return nil, errors.New(file + ": no cases")
	}
	routes := make([]route, 0, len(answers))
	for _, a := range answers {
		rt := route{method: a.Method, path: a.Route, conditional: a.Conditional, status: a.Status, body: []byte(a.ReplyBody), header: http.Header{}}
		if p, ok := strings.CutSuffix(a.Route, "{id}"); ok {
			rt.path, rt.prefix = p, true
		}
		for k, v := range a.ReplyHeaders {
			rt.header[http.CanonicalHeaderKey(k)] = v
		}
		routes = append(routes, rt)
	}
	return routes, nil
}

// serve answers the captured responses on addr until killed.
func serve(addr, answersFile string) error {
	routes, err := loadRoutes(answersFile)
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	srv := &http.Server{
		Handler: &handler{routes: routes, health: http.Header{
			"Content-Type":   {"text/plain; charset=utf-8"},
			"Content-Length": {fmt.Sprint(len(okBody))},
		}},
		ReadHeaderTimeout: readHeaderTimeout,
		ReadTimeout:       readTimeout,
		WriteTimeout:      writeTimeout,
		IdleTimeout:       idleTimeout,
		MaxHeaderBytes:    maxHeaderBytes,
	}
	log.Printf("serving %d cases on %s", len(routes), ln.Addr())
	return srv.Serve(ln)
}
