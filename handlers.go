// handlers.go: the route table and the HTTP handlers of users and goals.
// Every handler has one shape: read path and query, decode, call the store,
// write; each failure is s.fail(w, r, err) and return.
package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/http"
	"net/url"
	"slices"
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

// fail answers err in the contract's shape (see writeError).
func (s *server) fail(w http.ResponseWriter, r *http.Request, err error) {
	writeError(w, r, s.log, err)
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
// GET /api/users/{id}/goals, which share one route pattern. It names the
// route actually served, for metrics and the access log.
func (s *server) handleUserSubpath(w http.ResponseWriter, r *http.Request) {
	switch {
	case r.PathValue("id") == "by-username":
		r.Pattern = "GET /api/users/by-username/{username}"
		s.handleGetUserByUsername(w, r, r.PathValue("sub"))
	case r.PathValue("sub") == "goals":
		r.Pattern = "GET /api/users/{id}/goals"
		s.handleListUserGoals(w, r)
	default:
		s.fail(w, r, errRouteNotFound)
	}
}

// ---- users ----

// userRoute reads ?show= and the {id} of a user route; a malformed id is
// a 404, like an unknown one.
func userRoute(r *http.Request) (string, userShow, error) {
	show, err := parseUserShow(r.URL.Query()["show"])
	if err != nil {
		return "", show, err
	}
	id, ok := parseID(r.PathValue("id"))
	if !ok {
		return "", show, errUserNotFound
	}
	return id, show, nil
}

// handleListUsers serves GET /api/users: a page of users in id order,
// optionally only the one called ?username= (without regard to case).
func (s *server) handleListUsers(w http.ResponseWriter, r *http.Request) {
	query := r.URL.Query()
	pg, err := parsePage(query)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	show, err := parseUserShow(query["show"])
	if err != nil {
		s.fail(w, r, err)
		return
	}
	var username *string
	if query.Has("username") {
		name := query.Get("username")
		username = &name
	}
	users, err := s.store.ListUsers(r.Context(), pg.plusOne(), username, show)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	if len(users) > pg.Limit {
		users = users[:pg.Limit]
		setNextLink(w, r, query, users[len(users)-1].ID, pg.Limit)
	}
	var goals map[string][]Goal
	if show.Goals {
		if goals, err = s.store.GoalsOfUsers(r.Context(), userIDs(users)); err != nil {
			s.fail(w, r, err)
			return
		}
	}
	writeArray(w, r, len(users), func(b []byte, i int) []byte {
		return appendUser(b, &users[i], show, goals[users[i].ID])
	})
}

// userIDs lists the ids of users.
func userIDs(users []User) []string {
	ids := make([]string, len(users))
	for i := range users {
		ids[i] = users[i].ID
	}
	return ids
}

// handleCreateUser serves POST /api/users.
func (s *server) handleCreateUser(w http.ResponseWriter, r *http.Request) {
	show, err := parseUserShow(r.URL.Query()["show"])
	if err != nil {
		s.fail(w, r, err)
		return
	}
	in, err := readUserInput(w, r, true)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	if err := s.hashPassword(r.Context(), &in); err != nil {
		s.fail(w, r, err)
		return
	}
	u, err := newUser(&in)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	if err := s.store.CreateUser(r.Context(), &u); err != nil {
		s.fail(w, r, err)
		return
	}
	w.Header().Set("Location", "/api/users/"+u.ID)
	s.writeUser(w, r, http.StatusCreated, &u, show)
}

// newUser builds a user with a new id from a validated create input whose
// password is already hashed.
func newUser(in *userInput) (User, error) {
	id, err := newID()
	if err != nil {
		return User{}, err
	}
	u := User{ID: id}
	in.apply(&u)
	return u, nil
}

// hashPassword replaces the input's plain password by its hash, when one
// was sent. It runs before the write, never inside it: a hash takes tens
// of milliseconds.
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
	id, show, err := userRoute(r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	u, err := s.store.GetUser(r.Context(), id, show)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	s.writeUser(w, r, http.StatusOK, &u, show)
}

// handleGetUserByUsername serves GET /api/users/by-username/{username}.
func (s *server) handleGetUserByUsername(w http.ResponseWriter, r *http.Request, name string) {
	show, err := parseUserShow(r.URL.Query()["show"])
	if err != nil {
		s.fail(w, r, err)
		return
	}
	u, err := s.store.GetUserByUsername(r.Context(), name, show)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	s.writeUser(w, r, http.StatusOK, &u, show)
}

// handleUpdateUser serves PUT and PATCH /api/users/{id}: both change only
// the fields present in the body, after If-Match (when sent) matches.
func (s *server) handleUpdateUser(w http.ResponseWriter, r *http.Request) {
	id, show, err := userRoute(r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	in, err := readUserInput(w, r, false)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	if err := s.hashPassword(r.Context(), &in); err != nil {
		s.fail(w, r, err)
		return
	}
	u, err := s.store.UpdateUser(r.Context(), id, &in, ifMatchCheck(r))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	s.writeUser(w, r, http.StatusOK, &u, show)
}

// handlePutUserByUsername serves PUT /api/users/by-username/{username}:
// get-or-create-or-update. 201 when it created the user, 200 otherwise.
func (s *server) handlePutUserByUsername(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("username")
	if err := validateUsername(name); err != nil {
		s.fail(w, r, err)
		return
	}
	show, err := parseUserShow(r.URL.Query()["show"])
	if err != nil {
		s.fail(w, r, err)
		return
	}
	in, err := readUserInput(w, r, false)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	if in.Username.Set && !strings.EqualFold(in.Username.Value, name) {
		s.fail(w, r, fieldErrors{"username": "must match the username in the path"})
		return
	}
	if err := s.hashPassword(r.Context(), &in); err != nil {
		s.fail(w, r, err)
		return
	}
	check := ifMatchCheck(r)
	u, created, err := s.store.PutUserByUsername(r.Context(), name, &in, check, func() (User, error) {
		return userToCreate(name, in, check != nil)
	})
	if err != nil {
		s.fail(w, r, err)
		return
	}
	status := http.StatusOK
	if created {
		status = http.StatusCreated
		w.Header().Set("Location", "/api/users/"+u.ID)
	}
	s.writeUser(w, r, status, &u, show)
}

// userToCreate is the user an upsert creates when name is free: the body
// must then hold a password, and an If-Match (which names a version that
// cannot exist) fails.
func userToCreate(name string, in userInput, ifMatch bool) (User, error) {
	if ifMatch {
		return User{}, errPreconditionFailed
	}
	if in.passwordHash == "" {
		return User{}, fieldErrors{"password": "cannot be blank"}
	}
	if !in.Username.Set {
		in.Username = optional[string]{Set: true, Value: name}
	}
	return newUser(&in)
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
		s.fail(w, r, errUserNotFound)
		return
	}
	if err := s.store.DeleteUser(r.Context(), id, ifMatchCheck(r)); err != nil {
		s.fail(w, r, err)
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
		s.fail(w, r, err)
		return
	}
	c, err := decodeCredentials(obj)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	done, wait, ok := s.lockout.begin(c.Username.Value)
	if !ok {
		tooManyRequests(w, r, s.log, wait, errLockedOut)
		return
	}
	u, err := s.checkPassword(r.Context(), c.Username.Value, c.Password.Value)
	done(err == nil, errors.Is(err, errBadLogin))
	if err != nil {
		s.fail(w, r, err)
		return
	}
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

// writeUser writes {"user": {...}} with status and its ETag, embedding the
// user's goals when show asks for them.
func (s *server) writeUser(w http.ResponseWriter, r *http.Request, status int, u *User, show userShow) {
	var goals []Goal
	if show.Goals {
		byUser, err := s.store.GoalsOfUsers(r.Context(), []string{u.ID})
		if err != nil {
			s.fail(w, r, err)
			return
		}
		goals = byUser[u.ID]
	}
	writeObject(w, r, status, `{"user":`, u.Version, func(b []byte) []byte { return appendUser(b, u, show, goals) })
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

// ---- goals ----

// goalRoute reads ?show= and the {id} of a goal route; a malformed id is
// a 404, like an unknown one.
func goalRoute(r *http.Request) (string, goalShow, error) {
	show, err := parseGoalShow(r.URL.Query()["show"])
	if err != nil {
		return "", show, err
	}
	id, ok := parseID(r.PathValue("id"))
	if !ok {
		return "", show, errGoalNotFound
	}
	return id, show, nil
}

// handleListUserGoals serves GET /api/users/{id}/goals: a page of one
// user's goals; 404 when the user does not exist.
func (s *server) handleListUserGoals(w http.ResponseWriter, r *http.Request) {
	id, ok := parseID(r.PathValue("id"))
	if !ok {
		s.fail(w, r, errUserNotFound)
		return
	}
	exists, err := s.store.UserExists(r.Context(), id)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	if !exists {
		s.fail(w, r, errUserNotFound)
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
			s.fail(w, r, fieldErrors{"user_id": "must be a user id"})
			return
		}
		userID = &id
	}
	s.listGoals(w, r, userID)
}

// listGoals writes one page of goals (of userID when given) as a bare
// array, with a Link to the next page and owners embedded when asked.
func (s *server) listGoals(w http.ResponseWriter, r *http.Request, userID *string) {
	query := r.URL.Query()
	pg, err := parsePage(query)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	show, err := parseGoalShow(query["show"])
	if err != nil {
		s.fail(w, r, err)
		return
	}
	goals, err := s.store.ListGoals(r.Context(), pg.plusOne(), userID)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	if len(goals) > pg.Limit {
		goals = goals[:pg.Limit]
		setNextLink(w, r, query, goals[len(goals)-1].ID, pg.Limit)
	}
	var owners map[string]User
	if show.User {
		if owners, err = s.store.UsersByID(r.Context(), ownerIDs(goals), ownerShow(show)); err != nil {
			s.fail(w, r, err)
			return
		}
	}
	writeArray(w, r, len(goals), func(b []byte, i int) []byte {
		var owner *User
		if u, ok := owners[goals[i].UserID]; ok {
			owner = &u
		}
		return appendGoal(b, &goals[i], show, owner)
	})
}

// ownerIDs lists the distinct owners of goals.
func ownerIDs(goals []Goal) []string {
	ids := make([]string, 0, len(goals))
	for i := range goals {
		ids = append(ids, goals[i].UserID)
	}
	slices.Sort(ids)
	return slices.Compact(ids)
}

// ownerShow is what a goal's embedded owner shows.
func ownerShow(show goalShow) userShow {
	return userShow{Email: show.UserEmail, FullName: show.UserFullName}
}

// handleCreateGoal serves POST /api/users/{id}/goals.
func (s *server) handleCreateGoal(w http.ResponseWriter, r *http.Request) {
	show, err := parseGoalShow(r.URL.Query()["show"])
	if err != nil {
		s.fail(w, r, err)
		return
	}
	userID, ok := parseID(r.PathValue("id"))
	if !ok {
		s.fail(w, r, errUserNotFound)
		return
	}
	in, err := readGoalInput(w, r, true)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	id, err := newID()
	if err != nil {
		s.fail(w, r, err)
		return
	}
	g := Goal{ID: id, UserID: userID, Period: "day"}
	in.apply(&g)
	if err := s.store.CreateGoal(r.Context(), &g); err != nil {
		s.fail(w, r, err)
		return
	}
	w.Header().Set("Location", "/api/goals/"+g.ID)
	s.writeGoal(w, r, http.StatusCreated, &g, show)
}

// handleGetGoal serves GET /api/goals/{id}.
func (s *server) handleGetGoal(w http.ResponseWriter, r *http.Request) {
	id, show, err := goalRoute(r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	g, err := s.store.GetGoal(r.Context(), id)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	s.writeGoal(w, r, http.StatusOK, &g, show)
}

// handleUpdateGoal serves PUT and PATCH /api/goals/{id}: both change only
// the fields present; user_id in the body is ignored.
func (s *server) handleUpdateGoal(w http.ResponseWriter, r *http.Request) {
	id, show, err := goalRoute(r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	in, err := readGoalInput(w, r, false)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	g, err := s.store.UpdateGoal(r.Context(), id, &in, ifMatchCheck(r))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	s.writeGoal(w, r, http.StatusOK, &g, show)
}

// handleDeleteGoal serves DELETE /api/goals/{id}.
func (s *server) handleDeleteGoal(w http.ResponseWriter, r *http.Request) {
	id, ok := parseID(r.PathValue("id"))
	if !ok {
		s.fail(w, r, errGoalNotFound)
		return
	}
	if err := s.store.DeleteGoal(r.Context(), id, ifMatchCheck(r)); err != nil {
		s.fail(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// writeGoal writes {"goal": {...}} with status and its ETag, embedding its
// owner when show asks for it.
func (s *server) writeGoal(w http.ResponseWriter, r *http.Request, status int, g *Goal, show goalShow) {
	var owner *User
	if show.User {
		u, err := s.store.GetUser(r.Context(), g.UserID, ownerShow(show))
		if err != nil {
			s.fail(w, r, err)
			return
		}
		owner = &u
	}
	writeObject(w, r, status, `{"goal":`, g.Version, func(b []byte) []byte { return appendGoal(b, g, show, owner) })
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

// ---- paging ----

const (
	defaultLimit = 100
	maxLimit     = 1000
)

// parsePage reads ?limit= (a plain decimal 1–1000, default 100) and
// ?after= (an id from a previous page).
func parsePage(q url.Values) (page, error) {
	pg := page{Limit: defaultLimit}
	errs := fieldErrors{}
	if q.Has("limit") {
		n, err := parseLimit(q.Get("limit"))
		if err != nil {
			errs["limit"] = err.Error()
		}
		pg.Limit = n
	}
	if q.Has("after") {
		id, ok := parseID(q.Get("after"))
		if !ok {
			errs["after"] = "must be an id from a previous page"
		}
		pg.After = id
	}
	if len(errs) > 0 {
		return pg, errs
	}
	return pg, nil
}

// parseLimit accepts only plain decimal digits, between 1 and maxLimit.
func parseLimit(s string) (int, error) {
	errLimit := fmt.Errorf("must be an integer between 1 and %d", maxLimit)
	digits := strings.TrimLeft(s, "0")
	if s == "" || len(digits) > 4 || strings.TrimLeft(digits, "0123456789") != "" {
		return 0, errLimit
	}
	n, err := strconv.Atoi(digits)
	if err != nil || n < 1 || n > maxLimit {
		return 0, errLimit
	}
	return n, nil
}

// setNextLink adds Link: <…?after=last&limit=n>; rel="next", keeping the
// request's other query parameters.
func setNextLink(w http.ResponseWriter, r *http.Request, query url.Values, last string, limit int) {
	q := maps.Clone(query)
	q.Set("after", last)
	q.Set("limit", strconv.Itoa(limit))
	w.Header().Set("Link", "<"+r.URL.Path+"?"+q.Encode()+`>; rel="next"`)
}
