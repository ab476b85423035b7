// handlers.go: the route table and the HTTP handlers of users and goals.
// Every handler has one shape: read path and query, decode, call the store,
// write; each failure is s.fail(w, r, err) and return.
package main

import (
	"context"
	"errors"
	"fmt"
	"iter"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/time/rate"
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
	cache   *userCache // nil when off
	large   *largeAnswers
	handler http.Handler
	// shedWarning says, at most once in a while, that logins are being
	// refused because hashing is saturated; each refusal is in the access
	// log and in usersvc_password_hashes_refused_total, and a flood of
	// them must not become a flood of warnings.
	shedWarning rate.Sometimes
}

// newServer builds the API on st.
func newServer(cfg config, logger *slog.Logger, st *store) *server {
	now := cfg.now
	if now == nil {
		now = time.Now
	}
	m := newMetrics(st)
	s := &server{
		cfg: cfg, log: logger, store: st, metrics: m, shedWarning: rate.Sometimes{First: 1, Interval: time.Minute},
		hasher:  newPasswordHasher(cfg.password, m.passwordHashes, m.hashesRefused),
		limits:  newClientLimits(now, cfg.rateLimit, cfg.rateBurst, cfg.max404),
		lockout: newLoginLockout(st, now, cfg.maxLoginFailures, logger),
		cache:   newUserCache(st, cfg.cacheMiB, m.cacheHits, m.cacheMisses, logger),
		large:   newLargeAnswers(),
	}
	s.hasher.limit = cfg.memoryLimit
	go s.hasher.warmUp()
	mux := http.NewServeMux()
	s.addRoutes(mux)
	var h http.Handler = jsonRouteErrors(mux)
	h = withQueryCheck(logger, h)
	h = withBearerToken(cfg.token, cfg.metricsPublic, logger, h)
	h = withClientLimits(s.limits, logger, h)
	h = withoutCrossSite(cfg.admin, logger, h)
	h = withAllowedHosts(cfg.token, cfg.allowedHosts, logger, h)
	h = withObservability(s.metrics, logger, mux, h)
	h = withSecurityHeaders(h)
	s.handler = withRequestInfo(cfg.trustProxy, h)
	return s
}

// ServeHTTP serves a request through the middleware and routes.
func (s *server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.handler.ServeHTTP(w, r) }

// addRoutes is the API surface, one route a line.
func (s *server) addRoutes(mux *http.ServeMux) {
	mux.HandleFunc("GET /healthz", s.handleHealth)
	mux.Handle("GET /metrics", s.metrics.handler())
	mux.HandleFunc("GET /openapi.json", handleOpenAPI)
	if s.cfg.admin {
		mux.Handle("GET /admin/", adminHandler(s.log))
	}
	mux.HandleFunc("GET /api/users", s.handleListUsers)
	mux.HandleFunc("POST /api/users", s.handleCreateUser)
	mux.HandleFunc("GET /api/users/{id}", s.handleGetUser)
	mux.HandleFunc("PUT /api/users/{id}", s.handleUpdateUser)
	mux.HandleFunc("PATCH /api/users/{id}", s.handleUpdateUser)
	mux.HandleFunc("DELETE /api/users/{id}", s.handleDeleteUser)
	// GET /api/users/by-username/{username} and GET /api/users/{id}/goals
	// overlap (by-username/goals matches both), which ServeMux refuses at
	// registration; one pattern, of every method, takes both and
	// dispatches (the routes of other methods on those paths are more
	// specific, and win).
	mux.HandleFunc("/api/users/{id}/{sub}", s.handleUserSubpath)
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
	if errors.Is(err, errHashBusy) {
		s.shedWarning.Do(func() {
			s.log.WarnContext(r.Context(), "password hashing is saturated: refusing logins and password writes with 503 "+
				"(counted in usersvc_password_hashes_refused_total; this is said at most once a minute)")
		})
	}
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
// route actually served, for metrics and the access log. A method those
// paths do not have is a 405 with their Allow, as the mux answers; any
// method on another path under a user is a 404, as for a path that is no
// route.
func (s *server) handleUserSubpath(w http.ResponseWriter, r *http.Request) {
	var serve func(w http.ResponseWriter, r *http.Request)
	var allow string
	switch {
	case r.PathValue("id") == "by-username":
		r.Pattern, allow = "GET /api/users/by-username/{username}", "GET, HEAD, PUT"
		serve = func(w http.ResponseWriter, r *http.Request) { s.handleGetUserByUsername(w, r, r.PathValue("sub")) }
	case r.PathValue("sub") == "goals":
		r.Pattern, allow = "GET /api/users/{id}/goals", "GET, HEAD, POST"
		serve = s.handleListUserGoals
	default:
		s.fail(w, r, errRouteNotFound)
		return
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", allow)
		s.fail(w, r, errMethodNotAllowed)
		return
	}
	serve(w, r)
}

// ---- users ----

// userRoute reads ?show= and the {id} of a user route; a malformed id is
// a 404, like an unknown one.
func userRoute(r *http.Request) (string, userShow, error) {
	id, ok := parseID(r.PathValue("id"))
	if !ok {
		return "", userShow{}, errUserNotFound
	}
	q := queryOf(r)
	show, err := parseUserShow(q["show"])
	return id, show, allProblems(err, unknownParams(q, "show"))
}

// unknownParams answers the query parameters in q that the route does not
// take (known): a misspelled filter (?userid=) must not widen a list to
// every row, nor a parameter be silently ignored.
func unknownParams(q url.Values, known ...string) error {
	var errs fieldErrors
	for name := range q {
		if !slices.Contains(known, name) {
			if errs == nil {
				errs = fieldErrors{}
			}
			errs[name] = unknownParam
		}
	}
	return errs.orNil()
}

// queryOf is the request's query; a request without a query string (most
// reads of one resource) costs no parsing.
func queryOf(r *http.Request) url.Values {
	if r.URL.RawQuery == "" {
		return nil
	}
	return r.URL.Query()
}

// handleListUsers serves GET /api/users: a page of users in id order,
// optionally only the one called ?username= (without regard to case).
func (s *server) handleListUsers(w http.ResponseWriter, r *http.Request) {
	query := r.URL.Query()
	pg, pageErr := parsePage(query)
	show, showErr := parseUserShow(query["show"])
	username, usernameErr := singleParam(query, "username")
	if err := allProblems(pageErr, showErr, usernameErr, unknownParams(query, "limit", "after", "show", "username")); err != nil {
		s.fail(w, r, err)
		return
	}
	ctx, end, err := s.readsTogether(r, show.Goals)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	defer end() // for the paths that fail before end() below; a no-op after it
	users, err := s.store.ListUsers(ctx, pg.plusOne(), username, show.extras())
	if err != nil {
		s.fail(w, r, err)
		return
	}
	more := len(users) > pg.Limit
	users = users[:min(len(users), pg.Limit)]
	embed := s.goalEmbedder(ctx, users, show)
	defer embed.stop()
	place := s.answerPlace(r)
	defer place.done() // once the page is sent
	buf := getBuffer()
	defer putBuffer(buf)
	body, kept, err := renderPage(buf, len(users), func(b []byte, i int) ([]byte, error) {
		goals, err := embed.goalsOf(users[i].ID)
		if err != nil {
			return b, err
		}
		// Only a user's goals make one item large.
		if (show.Goals || len(b) > largeAnswerBytes/2) && !place.fits(len(b)+maxUserBytes(&users[i], show, goals)) {
			return b, errLargeAnswersBusy
		}
		return appendUser(b, &users[i], show, goals), nil
	})
	embed.stop() // closes the goals' rows, which the transaction's end awaits
	end()        // the page is read: see readsTogether
	if err != nil {
		s.fail(w, r, err)
		return
	}
	last := ""
	if kept > 0 {
		last = users[kept-1].ID
	}
	s.writePage(w, r, query, body, pg, more || kept < len(users), last)
}

// answerPlace is the claim of r's answer on a place for large answers
// (see largeAnswers); the caller defers its done.
func (s *server) answerPlace(r *http.Request) answerPlace {
	return answerPlace{answers: s.large, client: clientOf(r.Context()).key}
}

// goalsAnswer is what a user write asks before it commits an answer that
// embeds the user's goals (a place, when that answer is large: see
// answerGoals), nil when show embeds none, and the function to run once
// the answer is sent.
func (s *server) goalsAnswer(r *http.Request, show userShow) (answerGoals, func()) {
	if !show.Goals {
		return nil, func() {}
	}
	place := s.answerPlace(r)
	return place.forGoals(show), place.done
}

// readsTogether is r's context, its reads in one read transaction when
// the answer reads more than one statement (see store.oneRead), and the
// function that ends it (nothing to end otherwise). A handler ends it as
// soon as its reads are done, before it sends the answer: a client slow to
// take the answer must not hold the transaction, nor (on SQLite) one of
// the few read connections. end may run again, deferred for the paths
// that fail before.
func (s *server) readsTogether(r *http.Request, together bool) (context.Context, func(), error) {
	if !together {
		return r.Context(), func() {}, nil
	}
	return s.store.oneRead(r.Context())
}

// goalEmbedder hands out, user by user, the goals a page of users embeds.
// They come from one query, streamed: a page stops reading them once it
// is full, so a page of users with thousands of goals each never holds
// them all.
type goalEmbedder struct {
	next func() (Goal, error, bool)
	stop func()
	// held is a goal read ahead, of a later user than the one asked for.
	held    Goal
	holding bool
}

// goalEmbedder starts the goals query of users when show embeds goals.
func (s *server) goalEmbedder(ctx context.Context, users []User, show userShow) *goalEmbedder {
	if !show.Goals {
		return &goalEmbedder{stop: func() {}}
	}
	next, stop := iter.Pull2(s.store.GoalsOfUsers(ctx, userIDs(users)))
	return &goalEmbedder{next: next, stop: stop}
}

// goalsOf returns the goals of the user with id, who must come after the
// users asked for before (the page's order, which is the goals' order).
func (e *goalEmbedder) goalsOf(id string) ([]Goal, error) {
	if e.next == nil {
		return nil, nil
	}
	var goals []Goal
	for {
		if !e.holding {
			g, err, ok := e.next()
			if !ok {
				return goals, nil
			}
			if err != nil {
				return nil, err
			}
			e.held, e.holding = g, true
		}
		if e.held.UserID != id {
			return goals, nil
		}
		goals = append(goals, e.held)
		e.holding = false
	}
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
	q := queryOf(r)
	show, showErr := parseUserShow(q["show"])
	in, bodyErr := readUserInput(w, r, true)
	if err := allProblems(showErr, unknownParams(q, "show"), bodyErr); err != nil {
		s.fail(w, r, err)
		return
	}
	if err := s.checkTaken(r.Context(), &in, ""); err != nil {
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
	s.writeUser(w, r, http.StatusCreated, &u, show, nil) // a new user has no goals
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

// checkTaken answers 409 when the username or email a write with a
// password sets belongs to a user other than exceptID, before the password
// is hashed: a taken name must not cost a hash. (The write checks again in
// its transaction; this is only the early answer.)
func (s *server) checkTaken(ctx context.Context, in *userInput, exceptID string) error {
	if !in.Password.Set || in.Password.Null {
		return nil
	}
	var username, email *string
	if in.Username.Set {
		username = &in.Username.Value
	}
	if in.Email.Set && !in.Email.Null {
		email = &in.Email.Value
	}
	if username == nil && email == nil {
		return nil
	}
	taken, err := s.store.TakenFields(ctx, username, email, exceptID)
	if err != nil {
		return err
	}
	if len(taken) > 0 {
		return conflict(taken...)
	}
	return nil
}

// checkTarget, for an update that sets a password, answers a missing user
// (404) or a failed If-Match (412) before the password is hashed: neither
// should cost a hash. The write checks both again in its transaction.
func (s *server) checkTarget(ctx context.Context, in *userInput, id string, pre *precondition) error {
	if !in.Password.Set || in.Password.Null {
		return nil
	}
	u, err := s.readUser(ctx, id, userShow{})
	if err != nil {
		return err
	}
	return pre.check(u.ID, u.Version)
}

// hashPassword replaces the input's plain password by its hash, when one
// was sent. It runs before the write, never inside it: a hash takes tens
// of milliseconds.
func (s *server) hashPassword(ctx context.Context, in *userInput) error {
	if !in.Password.Set || in.Password.Null {
		return nil
	}
	hash, err := s.hasher.Hash(ctx, clientOf(ctx).key, in.Password.Value)
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
	if s.notModifiedFromCache(w, r, id, show) {
		return
	}
	read := func(ctx context.Context) (User, error) { return s.readUser(ctx, id, show) }
	if show.Goals { // from the state its goals are read in, not the cache
		read = func(ctx context.Context) (User, error) { return s.store.GetUser(ctx, id, show.extras()) }
	}
	s.writeReadUser(w, r, show, read)
}

// notModifiedFromCache answers 304 to a conditional GET of a user's
// default fields that the cache shows is current, without reading or
// rendering the user; otherwise it answers nothing and reports false.
func (s *server) notModifiedFromCache(w http.ResponseWriter, r *http.Request, id string, show userShow) bool {
	if show != (userShow{}) || len(r.Header["If-None-Match"]) == 0 || len(r.Header["If-Match"]) != 0 {
		return false
	}
	etag, ok := s.cache.defaultETag(id)
	if !ok || !noneMatch(r, etag) {
		return false
	}
	s.cache.hits.Inc()
	writeCacheable(w, r, http.StatusOK, nil, etag) // its 304: If-None-Match matched
	return true
}

// readUser returns the user with id, from the cache when it holds the
// current row.
func (s *server) readUser(ctx context.Context, id string, show userShow) (User, error) {
	if u, ok := s.cache.get(id); ok {
		return u, nil
	}
	gen := s.cache.generation(id) // noted before the read: see userCache.put
	u, err := s.store.GetUser(ctx, id, s.cache.extras(show.extras()))
	if err != nil {
		return User{}, err
	}
	s.cache.put(&u, gen)
	return u, nil
}

// handleGetUserByUsername serves GET /api/users/by-username/{username}.
func (s *server) handleGetUserByUsername(w http.ResponseWriter, r *http.Request, name string) {
	q := queryOf(r)
	show, err := parseUserShow(q["show"])
	if err := allProblems(err, unknownParams(q, "show")); err != nil {
		s.fail(w, r, err)
		return
	}
	s.writeReadUser(w, r, show, func(ctx context.Context) (User, error) {
		return s.store.GetUserByUsername(ctx, name, show.extras())
	})
}

// handleUpdateUser serves PUT and PATCH /api/users/{id}: both change only
// the fields present in the body, after If-Match (when sent) matches.
func (s *server) handleUpdateUser(w http.ResponseWriter, r *http.Request) {
	id, show, routeErr := userRoute(r)
	in, bodyErr := readUserInput(w, r, false)
	if err := allProblems(routeErr, bodyErr); err != nil {
		s.fail(w, r, err)
		return
	}
	pre := writePrecondition(r, "user")
	// In the order the write's transaction checks: the user and the
	// precondition (404, 412), then what is taken (409).
	if err := s.checkTarget(r.Context(), &in, id, pre); err != nil {
		s.fail(w, r, err)
		return
	}
	if err := s.checkTaken(r.Context(), &in, id); err != nil {
		s.fail(w, r, err)
		return
	}
	if err := s.hashPassword(r.Context(), &in); err != nil {
		s.fail(w, r, err)
		return
	}
	answer, sent := s.goalsAnswer(r, show)
	defer sent()
	u, goals, err := s.store.UpdateUser(r.Context(), id, &in, pre, answer)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	s.writeUser(w, r, http.StatusOK, &u, show, goals)
}

// handlePutUserByUsername serves PUT /api/users/by-username/{username}:
// get-or-create-or-update. 201 when it created the user, 200 otherwise.
// If-None-Match: * makes it create-only (412 when the user exists).
func (s *server) handlePutUserByUsername(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("username")
	nameErr := validateUsername(name)
	q := queryOf(r)
	show, showErr := parseUserShow(q["show"])
	in, bodyErr := readUserInput(w, r, false)
	var mismatch error
	if in.Username.Set && !strings.EqualFold(in.Username.Value, name) {
		mismatch = fieldErrors{"username": "must match the username in the path"}
	}
	if err := allProblems(nameErr, showErr, unknownParams(q, "show"), bodyErr, mismatch); err != nil {
		s.fail(w, r, err)
		return
	}
	pre := writePrecondition(r, "user")
	if err := s.checkUpsertBeforeHash(r.Context(), &in, name, pre); err != nil {
		s.fail(w, r, err)
		return
	}
	if err := s.hashPassword(r.Context(), &in); err != nil {
		s.fail(w, r, err)
		return
	}
	answer, sent := s.goalsAnswer(r, show)
	defer sent()
	u, goals, created, err := s.store.PutUserByUsername(r.Context(), name, &in, pre, func() (User, error) {
		return userToCreate(name, in)
	}, answer)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	status := http.StatusOK
	if created {
		status = http.StatusCreated
		w.Header().Set("Location", "/api/users/"+u.ID)
	}
	s.writeUser(w, r, status, &u, show, goals)
}

// checkUpsertBeforeHash is checkTarget and checkTaken for a write by
// username that sets a password, in the order its transaction checks: an
// If-Match or If-None-Match that fails on the user as it is, or on its
// absence (412), then an email that a user other than the path's holds
// (409), before the password is hashed. The email check leaves out the
// path's user by its name, not by an id read first, so a concurrent
// get-or-create that has just made that user is not "another user". The
// write checks both again in its transaction.
func (s *server) checkUpsertBeforeHash(ctx context.Context, in *userInput, name string, pre *precondition) error {
	if !in.Password.Set || in.Password.Null {
		return nil
	}
	if err := s.checkUpsertPrecondition(ctx, name, pre); err != nil {
		return err
	}
	if !in.Email.Set || in.Email.Null {
		return nil
	}
	taken, err := s.store.EmailTakenByOtherThan(ctx, in.Email.Value, name)
	if err != nil {
		return err
	}
	if taken {
		return conflict("email")
	}
	return nil
}

// checkUpsertPrecondition answers 412 when pre fails on the user called
// name as it is, or on its absence.
func (s *server) checkUpsertPrecondition(ctx context.Context, name string, pre *precondition) error {
	if pre == nil {
		return nil
	}
	u, err := s.store.GetUserByUsername(ctx, name, userExtras{})
	switch {
	case errors.Is(err, errUserNotFound):
		return pre.allowsCreate()
	case err != nil:
		return err
	}
	return pre.check(u.ID, u.Version)
}

// userToCreate is the user an upsert creates when name is free: the body
// must then hold a password.
func userToCreate(name string, in userInput) (User, error) {
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
	if err := unknownParams(queryOf(r)); err != nil {
		s.fail(w, r, err)
		return
	}
	if err := s.store.DeleteUser(r.Context(), id, writePrecondition(r, "user")); err != nil {
		s.fail(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// handleAuthenticate serves POST /api/authenticate. An unknown username and
// a wrong password get the same 401 after the same argon2id work; too many
// failures for one username lock it for a while, right password or not.
// A username or password that no user could have is a 400 before any of
// that: it is not hashed and not counted.
func (s *server) handleAuthenticate(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Cache-Control", "no-store")
	q := queryOf(r)
	show, showErr := parseUserShow(q["show"])
	c, bodyErr := readCredentials(w, r)
	if err := allProblems(showErr, unknownParams(q, "show"), bodyErr); err != nil {
		s.fail(w, r, err)
		return
	}
	done, err := s.lockout.begin(r.Context(), c.Username.Value)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	u, err := s.checkPassword(r.Context(), c.Username.Value, c.Password.Value)
	done(err == nil, errors.Is(err, errBadLogin))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	s.writeReadUser(w, r, show, func(ctx context.Context) (User, error) {
		if !show.Goals {
			return u, nil
		}
		// Read again, in the state its goals are read in: checking the
		// password took a while.
		again, err := s.store.GetUser(ctx, u.ID, show.extras())
		if errors.Is(err, errUserNotFound) { // deleted meanwhile
			return User{}, errBadLogin
		}
		return again, err
	})
}

// checkPassword returns the user when username and password match, and
// errBadLogin when either is wrong.
func (s *server) checkPassword(ctx context.Context, username, password string) (User, error) {
	key := clientOf(ctx).key
	u, err := s.store.GetCredentials(ctx, username)
	if errors.Is(err, errUserNotFound) {
		if err := s.hasher.VerifyNobody(ctx, key, password); err != nil {
			return User{}, err
		}
		return User{}, errBadLogin
	}
	if err != nil {
		return User{}, err
	}
	ok, err := s.hasher.Verify(ctx, key, u.PasswordHash, password)
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
func (s *server) writeUser(w http.ResponseWriter, r *http.Request, status int, u *User, show userShow, goals []Goal) {
	buf := getBuffer()
	defer putBuffer(buf)
	etag := renderUser(buf, u, show, goals) // before *buf is read: it renders into it
	writeCacheable(w, r, status, *buf, etag)
}

// writeReadUser answers the user read reads, with its goals when show
// asks for them, read in the same state of the database as the user.
func (s *server) writeReadUser(w http.ResponseWriter, r *http.Request, show userShow, read func(context.Context) (User, error)) {
	ctx, end, err := s.readsTogether(r, show.Goals)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	defer end()
	u, err := read(ctx)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	goals, err := s.goalsToEmbed(ctx, &u, show)
	end() // the answer is read: see readsTogether
	if err != nil {
		s.fail(w, r, err)
		return
	}
	if show.Goals { // only goals make a user large
		place := s.answerPlace(r)
		defer place.done() // once the answer is sent
		if !place.fits(maxUserBytes(&u, show, goals)) {
			s.fail(w, r, errLargeAnswersBusy)
			return
		}
	}
	s.writeUser(w, r, http.StatusOK, &u, show, goals)
}

// goalsToEmbed reads u's goals when show asks for them.
func (s *server) goalsToEmbed(ctx context.Context, u *User, show userShow) ([]Goal, error) {
	if !show.Goals {
		return nil, nil
	}
	return s.store.GoalsOfUser(ctx, u.ID)
}

// renderUser writes {"user": {...}} for u into buf, with goals embedded
// when show asks for them, and returns its ETag.
func renderUser(buf *[]byte, u *User, show userShow, goals []Goal) string {
	*buf = appendUserBody((*buf)[:0], u, show, goals)
	return resourceETag("user", u.ID, u.Version, *buf)
}

// appendUserBody appends the body of an answer of one user (the one
// renderUser writes).
func appendUserBody(b []byte, u *User, show userShow, goals []Goal) []byte {
	return appendObjectBody(b, `{"user":`, func(b []byte) []byte { return appendUser(b, u, show, goals) })
}

// readUserInput decodes and checks a user body; creating makes the
// required fields required.
func readUserInput(w http.ResponseWriter, r *http.Request, creating bool) (userInput, error) {
	obj, err := decodeJSONObject(w, r)
	if err != nil {
		return userInput{}, err
	}
	return decodeUserInput(obj, creating)
}

// ---- goals ----

// goalRoute reads ?show= and the {id} of a goal route; a malformed id is
// a 404, like an unknown one.
func goalRoute(r *http.Request) (string, goalShow, error) {
	id, ok := parseID(r.PathValue("id"))
	if !ok {
		return "", goalShow{}, errGoalNotFound
	}
	q := queryOf(r)
	show, err := parseGoalShow(q["show"])
	return id, show, allProblems(err, unknownParams(q, "show"))
}

// handleListUserGoals serves GET /api/users/{id}/goals: a page of one
// user's goals; 404 when the user does not exist.
func (s *server) handleListUserGoals(w http.ResponseWriter, r *http.Request) {
	id, ok := parseID(r.PathValue("id"))
	if !ok {
		s.fail(w, r, errUserNotFound)
		return
	}
	q := r.URL.Query() // not nil: the page's Link is written into it
	s.listGoals(w, r, q, &id, true, unknownParams(q, "limit", "after", "show"))
}

// handleListGoals serves GET /api/goals, optionally ?user_id= filtered.
func (s *server) handleListGoals(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query() // not nil: the page's Link is written into it
	userID, err := parseUserIDFilter(q)
	s.listGoals(w, r, q, userID, false, allProblems(err, unknownParams(q, "user_id", "limit", "after", "show")))
}

// parseUserIDFilter reads ?user_id= of GET /api/goals (nil when absent).
func parseUserIDFilter(q url.Values) (*string, error) {
	raw, err := singleParam(q, "user_id")
	if err != nil || raw == nil {
		return nil, err
	}
	id, ok := parseID(*raw)
	if !ok {
		return nil, fieldErrors{"user_id": "must be a user id"}
	}
	return &id, nil
}

// listGoals writes one page of goals (of userID when given) as a bare
// array, with a Link to the next page and owners embedded when asked;
// ofUser says the route names that user, so it answers 404 when the user
// does not exist (in the same state of the database as the page). routeErr
// is what the route found wrong with the rest of the query (the filter,
// names it does not take), answered with any problem of the page.
func (s *server) listGoals(w http.ResponseWriter, r *http.Request, query url.Values, userID *string, ofUser bool, routeErr error) {
	pg, pageErr := parsePage(query)
	show, showErr := parseGoalShow(query["show"])
	if err := allProblems(routeErr, pageErr, showErr); err != nil {
		s.fail(w, r, err)
		return
	}
	ctx, end, err := s.readsTogether(r, ofUser || show.User)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	defer end()
	if ofUser {
		exists, err := s.store.UserExists(ctx, *userID)
		if err == nil && !exists {
			err = errUserNotFound
		}
		if err != nil {
			s.fail(w, r, err)
			return
		}
	}
	goals, err := s.store.ListGoals(ctx, pg.plusOne(), userID)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	more := len(goals) > pg.Limit
	goals = goals[:min(len(goals), pg.Limit)]
	var owners map[string]User
	if show.User {
		if owners, err = s.store.UsersByID(ctx, ownerIDs(goals), ownerShow(show).extras()); err != nil {
			s.fail(w, r, err)
			return
		}
	}
	end() // the page is read: see readsTogether
	place := s.answerPlace(r)
	defer place.done() // once the page is sent
	buf := getBuffer()
	defer putBuffer(buf)
	body, kept, err := renderPage(buf, len(goals), func(b []byte, i int) ([]byte, error) {
		var owner *User
		if u, ok := owners[goals[i].UserID]; ok {
			owner = &u
		}
		// A goal is some kilobytes at most: only a page near the bound weighs it.
		if len(b) > largeAnswerBytes/2 && !place.fits(len(b)+maxGoalBytes(&goals[i], show, owner)) {
			return b, errLargeAnswersBusy
		}
		return appendGoal(b, &goals[i], show, owner), nil
	})
	if err != nil {
		s.fail(w, r, err)
		return
	}
	last := ""
	if kept > 0 {
		last = goals[kept-1].ID
	}
	s.writePage(w, r, query, body, pg, more || kept < len(goals), last)
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

// handleCreateGoal serves POST /api/users/{id}/goals.
func (s *server) handleCreateGoal(w http.ResponseWriter, r *http.Request) {
	userID, ok := parseID(r.PathValue("id"))
	if !ok {
		s.fail(w, r, errUserNotFound)
		return
	}
	q := queryOf(r)
	show, showErr := parseGoalShow(q["show"])
	in, bodyErr := readGoalInput(w, r, true)
	if err := allProblems(showErr, unknownParams(q, "show"), bodyErr); err != nil {
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
	owner, err := s.store.CreateGoal(r.Context(), &g, show.User)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	w.Header().Set("Location", "/api/goals/"+g.ID)
	s.writeGoal(w, r, http.StatusCreated, &g, show, owner)
}

// handleGetGoal serves GET /api/goals/{id}.
func (s *server) handleGetGoal(w http.ResponseWriter, r *http.Request) {
	id, show, err := goalRoute(r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	ctx, end, err := s.readsTogether(r, show.User)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	defer end()
	g, err := s.store.GetGoal(ctx, id)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	var owner *User
	if show.User {
		u, err := s.store.GetUser(ctx, g.UserID, ownerShow(show).extras())
		if err != nil {
			s.fail(w, r, err)
			return
		}
		owner = &u
	}
	end() // the answer is read: see readsTogether
	s.writeGoal(w, r, http.StatusOK, &g, show, owner)
}

// handleUpdateGoal serves PUT and PATCH /api/goals/{id}: both change only
// the fields present; user_id in the body is ignored.
func (s *server) handleUpdateGoal(w http.ResponseWriter, r *http.Request) {
	id, show, routeErr := goalRoute(r)
	in, bodyErr := readGoalInput(w, r, false)
	if err := allProblems(routeErr, bodyErr); err != nil {
		s.fail(w, r, err)
		return
	}
	g, owner, err := s.store.UpdateGoal(r.Context(), id, &in, writePrecondition(r, "goal"), show.User)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	s.writeGoal(w, r, http.StatusOK, &g, show, owner)
}

// handleDeleteGoal serves DELETE /api/goals/{id}.
func (s *server) handleDeleteGoal(w http.ResponseWriter, r *http.Request) {
	id, ok := parseID(r.PathValue("id"))
	if !ok {
		s.fail(w, r, errGoalNotFound)
		return
	}
	if err := unknownParams(queryOf(r)); err != nil {
		s.fail(w, r, err)
		return
	}
	if _, err := s.store.DeleteGoal(r.Context(), id, writePrecondition(r, "goal")); err != nil {
		s.fail(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// writeGoal writes {"goal": {...}} with status and its ETag, embedding its
// owner when show asks for it.
func (s *server) writeGoal(w http.ResponseWriter, r *http.Request, status int, g *Goal, show goalShow, owner *User) {
	buf := getBuffer()
	defer putBuffer(buf)
	etag := renderObject(buf, `{"goal":`, resourceKey{"goal", g.ID, g.Version}, func(b []byte) []byte { return appendGoal(b, g, show, owner) })
	writeCacheable(w, r, status, *buf, etag)
}

// readCredentials decodes and checks the body of an authenticate.
func readCredentials(w http.ResponseWriter, r *http.Request) (credentials, error) {
	obj, err := decodeJSONObject(w, r)
	if err != nil {
		return credentials{}, err
	}
	return decodeCredentials(obj)
}

// readGoalInput decodes and checks a goal body; creating makes the
// required fields required.
func readGoalInput(w http.ResponseWriter, r *http.Request, creating bool) (goalInput, error) {
	obj, err := decodeJSONObject(w, r)
	if err != nil {
		return goalInput{}, err
	}
	return decodeGoalInput(obj, creating)
}

// ---- paging ----

const (
	defaultLimit = 100
	maxLimit     = 1000
	// maxPageBytes caps a list page: a page ends early rather than pass
	// it, and its Link points at the first row left out.
	maxPageBytes = 4 << 20
)

// parsePage reads ?limit= (a plain decimal 1–1000, default 100) and
// ?after= (an id from a previous page), each given at most once.
func parsePage(q url.Values) (page, error) {
	pg := page{Limit: defaultLimit}
	errs := fieldErrors{}
	if v, err := singleParam(q, "limit"); err != nil {
		errs.merge(err.(fieldErrors))
	} else if v != nil {
		n, err := parseLimit(*v)
		if err != nil {
			errs["limit"] = err.Error()
		}
		pg.Limit = n
	}
	if v, err := singleParam(q, "after"); err != nil {
		errs.merge(err.(fieldErrors))
	} else if v != nil {
		id, ok := parseID(*v)
		if !ok {
			errs["after"] = "must be an id from a previous page"
		}
		pg.After = id
	}
	return pg, errs.orNil()
}

// singleParam returns the value of a query parameter that may be given
// at most once (nil when absent); twice is a 400 rather than a guess at
// which one was meant.
func singleParam(q url.Values, name string) (*string, error) {
	switch vs := q[name]; len(vs) {
	case 0:
		return nil, nil
	case 1:
		return &vs[0], nil
	default:
		return nil, fieldErrors{name: "must be given at most once"}
	}
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

// renderPage writes a JSON array of up to n items, each written by
// appendItem, stopping before an item that would take the body past
// maxPageBytes (a page always holds at least one item), or before one
// appendItem finds no place for (errLargeAnswersBusy, which the first
// item returns). It returns the body and how many items it holds.
// The body is rendered into buf (a pooled buffer, which keeps its size
// from page to page), with the newline every body ends with: writeJSON
// then writes it in one piece rather than adding the newline in a write
// (a system call, when a page is larger than net/http's buffer) of its
// own.
func renderPage(buf *[]byte, n int, appendItem func(b []byte, i int) ([]byte, error)) ([]byte, int, error) {
	b := append((*buf)[:0], '[')
	defer func() { *buf = b }()
	for i := 0; i < n; i++ {
		mark := len(b)
		if i > 0 {
			b = append(b, ',')
		}
		var err error
		if b, err = appendItem(b, i); err != nil {
			if err == errLargeAnswersBusy && i > 0 { // no place to grow: the page ends here
				return append(b[:mark], ']', '\n'), i, nil
			}
			return nil, 0, err
		}
		if i > 0 && len(b)+len("]\n") > maxPageBytes {
			return append(b[:mark], ']', '\n'), i, nil
		}
	}
	return append(b, ']', '\n'), n, nil
}

// writePage writes a list page with its ETag, and, when rows follow it, a
// Link to the next page (after its last row, keeping the request's other
// query parameters). The ETag covers the Link too. query is the request's
// query, as the handler parsed it; writePage sets after and limit in it.
func (s *server) writePage(w http.ResponseWriter, r *http.Request, query url.Values, body []byte, pg page, more bool, last string) {
	link := ""
	if more && last != "" {
		query.Set("after", last)
		query.Set("limit", strconv.Itoa(pg.Limit))
		link = "<" + r.URL.Path + "?" + query.Encode() + `>; rel="next"`
		w.Header().Set("Link", link)
	}
	writeCacheable(w, r, http.StatusOK, body, listETag(body, link))
}
