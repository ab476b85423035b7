// handlers.go: the route table and the HTTP handlers of users and goals:
// read path and query, decode, call the store, write.
package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// server is the whole HTTP API: the routes, the middleware around them, and
// what the handlers share.
type server struct {
	cfg     config
	log     *slog.Logger
	store   *store
	hasher  *passwordHasher
	limits  *clientLimits
	lockout *loginLockout
	metrics *metrics
	handler http.Handler
}

// newServer builds the API on st.
func newServer(cfg config, logger *slog.Logger, st *store) *server {
	now := cfg.now
	if now == nil {
		now = time.Now
	}
	s := &server{
		cfg: cfg, log: logger, store: st,
		hasher:  newPasswordHasher(cfg.password),
		limits:  newClientLimits(now, cfg.rateLimit, cfg.rateBurst, cfg.max404),
		lockout: newLoginLockout(now, cfg.maxLoginFailures),
		metrics: newMetrics(st),
	}
	go s.hasher.warmUp(context.Background())
	mux := http.NewServeMux()
	s.addRoutes(mux)
	var h http.Handler = jsonRouteErrors(mux)
	h = withBearerToken(cfg.token, cfg.metricsPublic, logger, h)
	h = withClientLimits(s.limits, cfg.trustProxy, logger, h)
	h = withObservability(s.metrics, logger, cfg.trustProxy, h)
	h = withSecurityHeaders(h)
	s.handler = withRequestID(h)
	return s
}

// ServeHTTP serves a request through the middleware and routes.
func (s *server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.handler.ServeHTTP(w, r) }

// addRoutes is the API surface, one route a line.
func (s *server) addRoutes(mux *http.ServeMux) {
	mux.HandleFunc("GET /healthz", s.handleHealth)
	mux.Handle("GET /metrics", s.metrics.handler())
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
	mux.HandleFunc("POST /api/users/{id}/goals", s.handleCreateGoal)
	mux.HandleFunc("POST /api/authenticate", s.handleAuthenticate)
	mux.HandleFunc("GET /api/goals", s.handleListGoals)
	mux.HandleFunc("GET /api/goals/{id}", s.handleGetGoal)
	mux.HandleFunc("PUT /api/goals/{id}", s.handleUpdateGoal)
	mux.HandleFunc("PATCH /api/goals/{id}", s.handleUpdateGoal)
	mux.HandleFunc("DELETE /api/goals/{id}", s.handleDeleteGoal)
}

// handleHealth serves GET /healthz: 200 when a trivial query answers
// within a second, else 503 with the reason.
func (s *server) handleHealth(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), time.Second)
	defer cancel()
	if err := s.store.Ping(ctx); err != nil {
		s.log.WarnContext(r.Context(), "health check failed", "err", err, "request_id", requestID(r.Context()))
		writeJSON(w, http.StatusServiceUnavailable, []byte(`{"status":"unavailable","error":"the database did not answer"}`))
		return
	}
	writeJSON(w, http.StatusOK, []byte(`{"status":"ok"}`))
}

// handleUserSubpath serves GET /api/users/by-username/{username} and
// GET /api/users/{id}/goals, which share one route pattern.
func (s *server) handleUserSubpath(w http.ResponseWriter, r *http.Request) {
	// Name the route actually served, for metrics and the access log.
	if r.PathValue("id") == "by-username" {
		r.Pattern = "GET /api/users/by-username/{username}"
		s.handleGetUserByUsername(w, r, r.PathValue("sub"))
		return
	}
	if r.PathValue("sub") == "goals" {
		r.Pattern = "GET /api/users/{id}/goals"
		s.handleListUserGoals(w, r)
		return
	}
	writeError(w, r, s.log, errRouteNotFound)
}

// handleListUsers serves GET /api/users: a page of users in id order.
func (s *server) handleListUsers(w http.ResponseWriter, r *http.Request) {
	query := r.URL.Query()
	q, err := parseListQuery(query)
	if err != nil {
		writeError(w, r, s.log, err)
		return
	}
	show, err := parseUserShow(query["show"])
	if err != nil {
		writeError(w, r, s.log, err)
		return
	}
	var username *string
	if query.Has("username") {
		name := query.Get("username")
		username = &name
	}
	users, err := s.store.ListUsers(r.Context(), listQuery{After: q.After, Limit: q.Limit + 1}, username, show)
	if err != nil {
		writeError(w, r, s.log, err)
		return
	}
	if len(users) > q.Limit {
		users = users[:q.Limit]
		setNextLink(w, r, users[len(users)-1].ID, q.Limit)
	}
	s.writeUserList(w, r, users, show)
}

// writeUserList writes users as a bare JSON array, embedding the goals of
// the whole page (fetched in one query) when show asks for them.
func (s *server) writeUserList(w http.ResponseWriter, r *http.Request, users []User, show userShow) {
	var goals map[string][]Goal
	if show.Goals {
		ids := make([]string, len(users))
		for i := range users {
			ids[i] = users[i].ID
		}
		var err error
		if goals, err = s.store.GoalsOfUsers(r.Context(), ids); err != nil {
			writeError(w, r, s.log, err)
			return
		}
	}
	buf := getBuffer()
	defer putBuffer(buf)
	b := append(*buf, '[')
	for i := range users {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendUser(b, &users[i], show, goals[users[i].ID])
	}
	b = append(b, ']')
	*buf = b
	writeCacheable(w, r, http.StatusOK, b, listETag(b))
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
	s.writeUser(w, r, http.StatusCreated, &u, show)
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
	u, err := s.store.GetUser(r.Context(), id, show)
	if err != nil {
		writeError(w, r, s.log, err)
		return
	}
	s.writeUser(w, r, http.StatusOK, &u, show)
}

// handleGetUserByUsername serves GET /api/users/by-username/{username}.
func (s *server) handleGetUserByUsername(w http.ResponseWriter, r *http.Request, name string) {
	show, err := parseUserShow(r.URL.Query()["show"])
	if err != nil {
		writeError(w, r, s.log, err)
		return
	}
	u, err := s.store.GetUserByUsername(r.Context(), name, show)
	if err != nil {
		writeError(w, r, s.log, err)
		return
	}
	s.writeUser(w, r, http.StatusOK, &u, show)
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
	u, err := s.store.UpdateUser(r.Context(), id, &in, ifMatchCheck(r))
	if err != nil {
		writeError(w, r, s.log, err)
		return
	}
	s.writeUser(w, r, http.StatusOK, &u, show)
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
	check := ifMatchCheck(r)
	u, created, err := s.store.PutUserByUsername(r.Context(), name, &in, check, func(in *userInput) (User, error) {
		if check != nil {
			return User{}, errPreconditionFailed // If-Match names a version; there is none
		}
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
	s.writeUser(w, r, status, &u, show)
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
	if err := s.store.DeleteUser(r.Context(), id, ifMatchCheck(r)); err != nil {
		writeError(w, r, s.log, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

var errLockedOut = &statusError{status: 429, msg: "too many failed attempts for this username: retry later"}

// handleAuthenticate serves POST /api/authenticate. An unknown username and
// a wrong password get the same 401 after the same argon2id work; too many
// failures for one username lock it for a while, right password or not.
func (s *server) handleAuthenticate(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Cache-Control", "no-store")
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
	if locked, wait := s.lockout.locked(c.Username.Value); locked {
		tooManyRequests(w, r, s.log, wait, errLockedOut)
		return
	}
	u, err := s.checkPassword(r.Context(), c.Username.Value, c.Password.Value)
	if errors.Is(err, errBadLogin) {
		s.lockout.fail(c.Username.Value)
	}
	if err != nil {
		writeError(w, r, s.log, err)
		return
	}
	s.lockout.succeed(c.Username.Value)
	s.writeUser(w, r, http.StatusOK, &u, userShow{})
}

// checkPassword returns the user when username and password match, and
// errBadLogin when either is wrong.
func (s *server) checkPassword(ctx context.Context, username, password string) (User, error) {
	u, err := s.store.GetCredentials(ctx, username)
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

// writeUser writes {"user": {...}} with status, embedding the user's goals
// when show asks for them.
func (s *server) writeUser(w http.ResponseWriter, r *http.Request, status int, u *User, show userShow) {
	var goals []Goal
	if show.Goals {
		byUser, err := s.store.GoalsOfUsers(r.Context(), []string{u.ID})
		if err != nil {
			writeError(w, r, s.log, err)
			return
		}
		goals = byUser[u.ID]
	}
	buf := getBuffer()
	defer putBuffer(buf)
	b := append(*buf, `{"user":`...)
	b = appendUser(b, u, show, goals)
	b = append(b, '}')
	*buf = b
	writeCacheable(w, r, status, b, resourceETag(u.Version, b))
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

// handleListUserGoals serves GET /api/users/{id}/goals: a page of one
// user's goals; 404 when the user does not exist.
func (s *server) handleListUserGoals(w http.ResponseWriter, r *http.Request) {
	id, ok := parseID(r.PathValue("id"))
	if !ok {
		writeError(w, r, s.log, errUserNotFound)
		return
	}
	exists, err := s.store.UserExists(r.Context(), id)
	if err != nil {
		writeError(w, r, s.log, err)
		return
	}
	if !exists {
		writeError(w, r, s.log, errUserNotFound)
		return
	}
	s.listGoals(w, r, &id)
}

// handleListGoals serves GET /api/goals, optionally ?user_id= filtered.
func (s *server) handleListGoals(w http.ResponseWriter, r *http.Request) {
	var userID *string
	if r.URL.Query().Has("user_id") {
		id, ok := parseID(r.URL.Query().Get("user_id"))
		if !ok {
			writeError(w, r, s.log, fieldErrors{"user_id": "must be a user id"})
			return
		}
		userID = &id
	}
	s.listGoals(w, r, userID)
}

// listGoals writes one page of goals (of userID when given) as a bare
// array, with a Link to the next page.
func (s *server) listGoals(w http.ResponseWriter, r *http.Request, userID *string) {
	q, err := parseListQuery(r.URL.Query())
	if err != nil {
		writeError(w, r, s.log, err)
		return
	}
	show, err := parseGoalShow(r.URL.Query()["show"])
	if err != nil {
		writeError(w, r, s.log, err)
		return
	}
	goals, err := s.store.ListGoals(r.Context(), listQuery{After: q.After, Limit: q.Limit + 1}, userID)
	if err != nil {
		writeError(w, r, s.log, err)
		return
	}
	if len(goals) > q.Limit {
		goals = goals[:q.Limit]
		setNextLink(w, r, goals[len(goals)-1].ID, q.Limit)
	}
	var owners map[string]User
	if show.User {
		ids := make([]string, 0, len(goals))
		for i := range goals {
			ids = append(ids, goals[i].UserID)
		}
		if owners, err = s.store.UsersByID(r.Context(), ids, ownerShow(show)); err != nil {
			writeError(w, r, s.log, err)
			return
		}
	}
	buf := getBuffer()
	defer putBuffer(buf)
	b := append(*buf, '[')
	for i := range goals {
		if i > 0 {
			b = append(b, ',')
		}
		var owner *User
		if u, ok := owners[goals[i].UserID]; ok {
			owner = &u
		}
		b = appendGoal(b, &goals[i], show, owner)
	}
	b = append(b, ']')
	*buf = b
	writeCacheable(w, r, http.StatusOK, b, listETag(b))
}

// handleCreateGoal serves POST /api/users/{id}/goals.
func (s *server) handleCreateGoal(w http.ResponseWriter, r *http.Request) {
	userID, ok := parseID(r.PathValue("id"))
	if !ok {
		writeError(w, r, s.log, errUserNotFound)
		return
	}
	show, err := parseGoalShow(r.URL.Query()["show"])
	if err != nil {
		writeError(w, r, s.log, err)
		return
	}
	in, err := readGoalInput(w, r, true)
	if err != nil {
		writeError(w, r, s.log, err)
		return
	}
	id, err := newID()
	if err != nil {
		writeError(w, r, s.log, err)
		return
	}
	g := Goal{ID: id, UserID: userID, Period: "day"}
	in.apply(&g)
	if err := s.store.CreateGoal(r.Context(), &g); err != nil {
		writeError(w, r, s.log, err)
		return
	}
	w.Header().Set("Location", "/api/goals/"+g.ID)
	s.writeGoal(w, r, http.StatusCreated, &g, show)
}

// handleGetGoal serves GET /api/goals/{id}.
func (s *server) handleGetGoal(w http.ResponseWriter, r *http.Request) {
	id, ok := parseID(r.PathValue("id"))
	if !ok {
		writeError(w, r, s.log, errGoalNotFound)
		return
	}
	show, err := parseGoalShow(r.URL.Query()["show"])
	if err != nil {
		writeError(w, r, s.log, err)
		return
	}
	g, err := s.store.GetGoal(r.Context(), id)
	if err != nil {
		writeError(w, r, s.log, err)
		return
	}
	s.writeGoal(w, r, http.StatusOK, &g, show)
}

// handleUpdateGoal serves PUT and PATCH /api/goals/{id}: both change only
// the fields present; user_id in the body is ignored.
func (s *server) handleUpdateGoal(w http.ResponseWriter, r *http.Request) {
	id, ok := parseID(r.PathValue("id"))
	if !ok {
		writeError(w, r, s.log, errGoalNotFound)
		return
	}
	show, err := parseGoalShow(r.URL.Query()["show"])
	if err != nil {
		writeError(w, r, s.log, err)
		return
	}
	in, err := readGoalInput(w, r, false)
	if err != nil {
		writeError(w, r, s.log, err)
		return
	}
	g, err := s.store.UpdateGoal(r.Context(), id, &in, ifMatchCheck(r))
	if err != nil {
		writeError(w, r, s.log, err)
		return
	}
	s.writeGoal(w, r, http.StatusOK, &g, show)
}

// handleDeleteGoal serves DELETE /api/goals/{id}.
func (s *server) handleDeleteGoal(w http.ResponseWriter, r *http.Request) {
	id, ok := parseID(r.PathValue("id"))
	if !ok {
		writeError(w, r, s.log, errGoalNotFound)
		return
	}
	if err := s.store.DeleteGoal(r.Context(), id, ifMatchCheck(r)); err != nil {
		writeError(w, r, s.log, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// writeGoal writes {"goal": {...}} with status, embedding its owner when
// show asks for it.
func (s *server) writeGoal(w http.ResponseWriter, r *http.Request, status int, g *Goal, show goalShow) {
	var owner *User
	if show.User {
		u, err := s.store.GetUser(r.Context(), g.UserID, ownerShow(show))
		if err != nil {
			writeError(w, r, s.log, err)
			return
		}
		owner = &u
	}
	buf := getBuffer()
	defer putBuffer(buf)
	b := append(*buf, `{"goal":`...)
	b = appendGoal(b, g, show, owner)
	b = append(b, '}')
	*buf = b
	writeCacheable(w, r, status, b, resourceETag(g.Version, b))
}

// ownerShow is what a goal's embedded owner shows.
func ownerShow(show goalShow) userShow {
	return userShow{Email: show.UserEmail, FullName: show.UserFullName}
}

// readGoalInput decodes and validates a goal body; creating makes the
// required fields required.
func readGoalInput(w http.ResponseWriter, r *http.Request, creating bool) (goalInput, error) {
	obj, err := decodeJSONObject(w, r)
	if err != nil {
		return goalInput{}, err
	}
	in, err := decodeGoalInput(obj)
	if err != nil {
		return in, err
	}
	return in, in.validate(creating)
}
