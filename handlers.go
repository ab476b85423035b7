// handlers.go: the route table and the HTTP handlers of the users API, with
// the one place that decodes request bodies and the one that writes errors.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
)

// maxBodyBytes caps request bodies; a larger one is answered 413.
const maxBodyBytes = 1 << 20

// server holds what the handlers share. It has no mutable state of its own.
type server struct {
	cfg    config
	log    *slog.Logger
	store  *store
	hasher *passwordHasher
}

// newServer returns the whole HTTP API as one handler.
func newServer(cfg config, logger *slog.Logger, st *store) http.Handler {
	s := &server{cfg: cfg, log: logger, store: st, hasher: newPasswordHasher(cfg.password)}
	go s.hasher.warmUp(context.Background())
	mux := http.NewServeMux()
	s.addRoutes(mux)
	return jsonRouteErrors(mux)
}

// addRoutes is the API surface, one route a line.
func (s *server) addRoutes(mux *http.ServeMux) {
	mux.HandleFunc("GET /healthz", s.handleHealth)
	mux.HandleFunc("GET /api/users", s.handleListUsers)
	mux.HandleFunc("POST /api/users", s.handleCreateUser)
	mux.HandleFunc("GET /api/users/{id}", s.handleGetUser)
	mux.HandleFunc("PUT /api/users/{id}", s.handleUpdateUser)
	mux.HandleFunc("PATCH /api/users/{id}", s.handleUpdateUser)
	mux.HandleFunc("DELETE /api/users/{id}", s.handleDeleteUser)
	// GET /api/users/by-username/{username} and GET /api/users/{id}/goals
	// overlap (by-username/goals matches both), which ServeMux refuses at
	// registration; one pattern takes both and dispatches.
	mux.HandleFunc("GET /api/users/{id}/{sub}", s.handleUserSubpath)
	mux.HandleFunc("PUT /api/users/by-username/{username}", s.handlePutUserByUsername)
	mux.HandleFunc("POST /api/authenticate", s.handleAuthenticate)
}

// handleHealth serves GET /healthz: 200 when the database answers.
func (s *server) handleHealth(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, []byte(`{"status":"ok"}`))
}

// handleUserSubpath serves GET /api/users/by-username/{username} and
// GET /api/users/{id}/goals, which share one route pattern.
func (s *server) handleUserSubpath(w http.ResponseWriter, r *http.Request) {
	if r.PathValue("id") == "by-username" {
		s.handleGetUserByUsername(w, r, r.PathValue("sub"))
		return
	}
	writeError(w, r, s.log, errRouteNotFound)
}

// handleListUsers serves GET /api/users: a page of users in id order.
func (s *server) handleListUsers(w http.ResponseWriter, r *http.Request) {
	q, err := parseListQuery(r.URL.Query())
	if err != nil {
		writeError(w, r, s.log, err)
		return
	}
	show, err := parseUserShow(r.URL.Query()["show"])
	if err != nil {
		writeError(w, r, s.log, err)
		return
	}
	var username *string
	if r.URL.Query().Has("username") {
		name := r.URL.Query().Get("username")
		username = &name
	}
	users, err := s.store.ListUsers(r.Context(), listQuery{After: q.After, Limit: q.Limit + 1}, username)
	if err != nil {
		writeError(w, r, s.log, err)
		return
	}
	if len(users) > q.Limit {
		users = users[:q.Limit]
		setNextLink(w, r, users[len(users)-1].ID, q.Limit)
	}
	buf := getBuffer()
	defer putBuffer(buf)
	b := append(*buf, '[')
	for i := range users {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendUser(b, &users[i], show, nil)
	}
	b = append(b, ']')
	*buf = b
	writeJSON(w, http.StatusOK, b)
}

// handleCreateUser serves POST /api/users.
func (s *server) handleCreateUser(w http.ResponseWriter, r *http.Request) {
	show, err := parseUserShow(r.URL.Query()["show"])
	if err != nil {
		writeError(w, r, s.log, err)
		return
	}
	in, err := readUserInput(w, r, true)
	if err != nil {
		writeError(w, r, s.log, err)
		return
	}
	u, err := s.newUser(r.Context(), &in)
	if err != nil {
		writeError(w, r, s.log, err)
		return
	}
	if err := s.store.CreateUser(r.Context(), &u); err != nil {
		writeError(w, r, s.log, err)
		return
	}
	w.Header().Set("Location", "/api/users/"+u.ID)
	s.writeUser(w, http.StatusCreated, &u, show)
}

// newUser builds a user from a validated create input, hashing the password
// unless the caller already did.
func (s *server) newUser(ctx context.Context, in *userInput) (User, error) {
	if in.passwordHash == "" {
		if err := s.hashPassword(ctx, in); err != nil {
			return User{}, err
		}
	}
	id, err := newID()
	if err != nil {
		return User{}, err
	}
	u := User{ID: id}
	in.apply(&u)
	return u, nil
}

// hashPassword replaces the input's plain password by its hash, when one
// was sent.
func (s *server) hashPassword(ctx context.Context, in *userInput) error {
	if !in.Password.Set || in.Password.Null {
		return nil
	}
	hash, err := s.hasher.Hash(ctx, in.Password.Value)
	if err != nil {
		return fmt.Errorf("hash password: %w", err)
	}
	in.passwordHash = hash
	return nil
}

// handleGetUser serves GET /api/users/{id}.
func (s *server) handleGetUser(w http.ResponseWriter, r *http.Request) {
	id, ok := parseID(r.PathValue("id"))
	if !ok {
		writeError(w, r, s.log, errUserNotFound)
		return
	}
	show, err := parseUserShow(r.URL.Query()["show"])
	if err != nil {
		writeError(w, r, s.log, err)
		return
	}
	u, err := s.store.GetUser(r.Context(), id)
	if err != nil {
		writeError(w, r, s.log, err)
		return
	}
	s.writeUser(w, http.StatusOK, &u, show)
}

// handleGetUserByUsername serves GET /api/users/by-username/{username}.
func (s *server) handleGetUserByUsername(w http.ResponseWriter, r *http.Request, name string) {
	show, err := parseUserShow(r.URL.Query()["show"])
	if err != nil {
		writeError(w, r, s.log, err)
		return
	}
	u, err := s.store.GetUserByUsername(r.Context(), name)
	if err != nil {
		writeError(w, r, s.log, err)
		return
	}
	s.writeUser(w, http.StatusOK, &u, show)
}

// handleUpdateUser serves PUT and PATCH /api/users/{id}: both change only
// the fields present in the body.
func (s *server) handleUpdateUser(w http.ResponseWriter, r *http.Request) {
	id, ok := parseID(r.PathValue("id"))
	if !ok {
		writeError(w, r, s.log, errUserNotFound)
		return
	}
	show, err := parseUserShow(r.URL.Query()["show"])
	if err != nil {
		writeError(w, r, s.log, err)
		return
	}
	in, err := readUserInput(w, r, false)
	if err != nil {
		writeError(w, r, s.log, err)
		return
	}
	if err := s.hashPassword(r.Context(), &in); err != nil {
		writeError(w, r, s.log, err)
		return
	}
	u, err := s.store.UpdateUser(r.Context(), id, &in, nil)
	if err != nil {
		writeError(w, r, s.log, err)
		return
	}
	s.writeUser(w, http.StatusOK, &u, show)
}

// handlePutUserByUsername serves PUT /api/users/by-username/{username}:
// get-or-create-or-update. 201 when it created the user, 200 otherwise.
func (s *server) handlePutUserByUsername(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("username")
	if err := validateUsername(name); err != nil {
		writeError(w, r, s.log, err)
		return
	}
	show, err := parseUserShow(r.URL.Query()["show"])
	if err != nil {
		writeError(w, r, s.log, err)
		return
	}
	in, err := readUserInput(w, r, false)
	if err != nil {
		writeError(w, r, s.log, err)
		return
	}
	if in.Username.Set && !strings.EqualFold(in.Username.Value, name) {
		writeError(w, r, s.log, fieldErrors{"username": "must match the username in the path"})
		return
	}
	if err := s.hashPassword(r.Context(), &in); err != nil {
		writeError(w, r, s.log, err)
		return
	}
	u, created, err := s.store.PutUserByUsername(r.Context(), name, &in, func(in *userInput) (User, error) {
		if in.passwordHash == "" {
			return User{}, fieldErrors{"password": "cannot be blank"}
		}
		create := *in
		if !create.Username.Set {
			create.Username = optional[string]{Set: true, Value: name}
		}
		return s.newUser(r.Context(), &create)
	})
	if err != nil {
		writeError(w, r, s.log, err)
		return
	}
	status := http.StatusOK
	if created {
		status = http.StatusCreated
		w.Header().Set("Location", "/api/users/"+u.ID)
	}
	s.writeUser(w, status, &u, show)
}

// validateUsername applies the username rules to a name from a path.
func validateUsername(name string) error {
	in := userInput{Username: optional[string]{Set: true, Value: name}}
	return in.validate(false)
}

// handleDeleteUser serves DELETE /api/users/{id}; the user's goals go too.
func (s *server) handleDeleteUser(w http.ResponseWriter, r *http.Request) {
	id, ok := parseID(r.PathValue("id"))
	if !ok {
		writeError(w, r, s.log, errUserNotFound)
		return
	}
	if err := s.store.DeleteUser(r.Context(), id, nil); err != nil {
		writeError(w, r, s.log, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// handleAuthenticate serves POST /api/authenticate. An unknown username and
// a wrong password get the same 401 after the same argon2id work.
func (s *server) handleAuthenticate(w http.ResponseWriter, r *http.Request) {
	obj, err := decodeJSONObject(w, r)
	if err != nil {
		writeError(w, r, s.log, err)
		return
	}
	c, err := decodeCredentials(obj)
	if err != nil {
		writeError(w, r, s.log, err)
		return
	}
	u, err := s.checkPassword(r.Context(), c.Username.Value, c.Password.Value)
	if err != nil {
		writeError(w, r, s.log, err)
		return
	}
	s.writeUser(w, http.StatusOK, &u, userShow{})
}

// checkPassword returns the user when username and password match, and
// errBadLogin when either is wrong.
func (s *server) checkPassword(ctx context.Context, username, password string) (User, error) {
	u, err := s.store.GetUserByUsername(ctx, username)
	if errors.Is(err, errUserNotFound) {
		if err := s.hasher.VerifyNobody(ctx, password); err != nil {
			return User{}, err
		}
		return User{}, errBadLogin
	}
	if err != nil {
		return User{}, err
	}
	ok, err := s.hasher.Verify(ctx, u.PasswordHash, password)
	if err != nil {
		return User{}, fmt.Errorf("verify password of %s: %w", u.ID, err)
	}
	if !ok {
		return User{}, errBadLogin
	}
	return u, nil
}

// writeUser writes {"user": {...}} with status.
func (s *server) writeUser(w http.ResponseWriter, status int, u *User, show userShow) {
	buf := getBuffer()
	defer putBuffer(buf)
	b := append(*buf, `{"user":`...)
	b = appendUser(b, u, show, nil)
	b = append(b, '}')
	*buf = b
	writeJSON(w, status, b)
}

// readUserInput decodes and validates a user body; creating makes the
// required fields required.
func readUserInput(w http.ResponseWriter, r *http.Request, creating bool) (userInput, error) {
	obj, err := decodeJSONObject(w, r)
	if err != nil {
		return userInput{}, err
	}
	in, err := decodeUserInput(obj)
	if err != nil {
		return in, err
	}
	return in, in.validate(creating)
}

// pageQuery is the parsed ?limit= and ?after= of a list.
type pageQuery struct {
	Limit int
	After string
}

const (
	defaultLimit = 100
	maxLimit     = 1000
)

// parseListQuery reads ?limit= (a plain decimal 1–1000, default 100) and
// ?after= (an id).
func parseListQuery(q url.Values) (pageQuery, error) {
	p := pageQuery{Limit: defaultLimit}
	errs := fieldErrors{}
	if q.Has("limit") {
		n, err := parseLimit(q.Get("limit"))
		if err != nil {
			errs["limit"] = err.Error()
		}
		p.Limit = n
	}
	if q.Has("after") {
		id, ok := parseID(q.Get("after"))
		if !ok {
			errs["after"] = "must be an id from a previous page"
		}
		p.After = id
	}
	if len(errs) > 0 {
		return p, errs
	}
	return p, nil
}

// parseLimit accepts only plain decimal digits between 1 and maxLimit.
func parseLimit(s string) (int, error) {
	errLimit := fmt.Errorf("must be an integer between 1 and %d", maxLimit)
	if s == "" || len(s) > 4 || strings.TrimLeft(s, "0123456789") != "" {
		return 0, errLimit
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 || n > maxLimit {
		return 0, errLimit
	}
	return n, nil
}

// setNextLink adds Link: <…?after=last&limit=n>; rel="next", keeping the
// request's other query parameters.
func setNextLink(w http.ResponseWriter, r *http.Request, last string, limit int) {
	q := r.URL.Query()
	q.Set("after", last)
	q.Set("limit", strconv.Itoa(limit))
	w.Header().Set("Link", "<"+r.URL.Path+"?"+q.Encode()+`>; rel="next"`)
}

// Body decoding errors, each with the status it is answered with.
var (
	errRouteNotFound    = &statusError{status: 404, msg: "not found"}
	errUnsupportedMedia = &statusError{status: 415, msg: "Content-Type must be application/json"}
	errBodyTooLarge     = &statusError{status: 413, msg: "body is larger than 1 MiB"}
	errEmptyBody        = &statusError{status: 400, msg: "body is empty: send a JSON object"}
	errNotObject        = &statusError{status: 400, msg: "body must be a JSON object"}
	errTrailingData     = &statusError{status: 400, msg: "body must hold a single JSON object, with nothing after it"}
)

// decodeJSONObject reads the request body as exactly one JSON object of at
// most maxBodyBytes, mapping every failure to a clear client error.
func decodeJSONObject(w http.ResponseWriter, r *http.Request) (map[string]json.RawMessage, error) {
	mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil || mt != "application/json" {
		return nil, errUnsupportedMedia
	}
	r.Body = http.MaxBytesReader(w, r.Body, maxBodyBytes)
	dec := json.NewDecoder(r.Body)
	var obj map[string]json.RawMessage
	if err := dec.Decode(&obj); err != nil {
		return nil, bodyError(err)
	}
	if obj == nil {
		return nil, errNotObject
	}
	if err := dec.Decode(&struct{}{}); !errors.Is(err, io.EOF) {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			return nil, errBodyTooLarge
		}
		return nil, errTrailingData
	}
	return obj, nil
}

// bodyError describes why a body did not decode.
func bodyError(err error) error {
	var syntax *json.SyntaxError
	var typ *json.UnmarshalTypeError
	var tooLarge *http.MaxBytesError
	switch {
	case errors.As(err, &tooLarge):
		return errBodyTooLarge
	case errors.Is(err, io.EOF):
		return errEmptyBody
	case errors.Is(err, io.ErrUnexpectedEOF):
		return &statusError{status: 400, msg: "malformed JSON: the body ends too early"}
	case errors.As(err, &syntax):
		return &statusError{status: 400, msg: fmt.Sprintf("malformed JSON at byte %d: %s", syntax.Offset, strings.TrimPrefix(syntax.Error(), "json: "))}
	case errors.As(err, &typ):
		return errNotObject
	}
	return &statusError{status: 400, msg: "cannot read the body"}
}

// writeJSON writes body, already marshalled, with status.
func writeJSON(w http.ResponseWriter, status int, body []byte) {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(status)
	w.Write(body) //nolint:errcheck // the client is gone; nothing to do
}

// writeError answers err in the contract's shape. Only 5xx are logged at
// error level, with the cause; their body never carries it.
func writeError(w http.ResponseWriter, r *http.Request, log *slog.Logger, err error) {
	var (
		fe fieldErrors
		ce *conflictError
		se *statusError
	)
	status, body := http.StatusInternalServerError, map[string]any{"error": "internal error"}
	switch {
	case errors.As(err, &fe):
		status, body = http.StatusBadRequest, map[string]any{"errors": fe}
	case errors.As(err, &ce):
		taken := fieldErrors{}
		for _, f := range ce.fields {
			taken[f] = "is already taken"
		}
		status, body = http.StatusConflict, map[string]any{"errors": taken}
	case errors.As(err, &se):
		status, body = se.status, map[string]any{"error": se.msg}
	case errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded):
		status, body = http.StatusServiceUnavailable, map[string]any{"error": "request cancelled or timed out"}
	}
	if status >= 500 {
		log.ErrorContext(r.Context(), "request failed", "method", r.Method, "path", r.URL.Path, "status", status, "err", err)
	}
	b, mErr := json.Marshal(body)
	if mErr != nil {
		b, status = []byte(`{"error":"internal error"}`), http.StatusInternalServerError
	}
	writeJSON(w, status, b)
}

// jsonRouteErrors answers the mux's own 404 and 405 (with Allow) as JSON;
// matched routes are served as they are.
func jsonRouteErrors(mux *http.ServeMux) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, pattern := mux.Handler(r); pattern != "" {
			mux.ServeHTTP(w, r)
			return
		}
		rec := &statusRecorder{header: http.Header{}}
		mux.ServeHTTP(rec, r)
		switch rec.status {
		case http.StatusMethodNotAllowed:
			w.Header().Set("Allow", rec.header.Get("Allow"))
			writeJSON(w, rec.status, []byte(`{"error":"method not allowed"}`))
		case http.StatusMovedPermanently, http.StatusPermanentRedirect:
			loc := rec.header.Get("Location")
			w.Header().Set("Location", loc)
			b, _ := json.Marshal(map[string]string{"error": "moved to " + loc})
			writeJSON(w, rec.status, b)
		default:
			writeJSON(w, http.StatusNotFound, []byte(`{"error":"not found"}`))
		}
	})
}

// statusRecorder captures the status and headers of the mux's built-in
// error answers, discarding their plain-text bodies.
type statusRecorder struct {
	header http.Header
	status int
}

func (r *statusRecorder) Header() http.Header         { return r.header }
func (r *statusRecorder) Write(b []byte) (int, error) { return len(b), nil }
func (r *statusRecorder) WriteHeader(status int)      { r.status = status }

// bufferPool recycles response buffers so a hot list page does not allocate
// its body every time.
var bufferPool = sync.Pool{New: func() any { b := make([]byte, 0, 4096); return &b }}

func getBuffer() *[]byte { b := bufferPool.Get().(*[]byte); *b = (*b)[:0]; return b }

func putBuffer(b *[]byte) {
	if cap(*b) <= 1<<20 {
		bufferPool.Put(b)
	}
}
