// main.go: flags and environment, the subcommands, and starting and
// gracefully stopping the HTTP server.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"net/http"
	"os"
	"os/signal"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unicode"
	"unicode/utf8"

	"golang.org/x/net/netutil"
)

func main() {
	// SIGHUP (a closed terminal, a log rotator's postrotate) stops as
	// SIGTERM does, instead of killing at once. A second signal while
	// stopping does kill at once: the operator wants it over.
	// A server started with nohup keeps SIGHUP ignored, as nohup asks.
	stops := []os.Signal{os.Interrupt, syscall.SIGTERM}
	if !signal.Ignored(syscall.SIGHUP) {
		stops = append(stops, syscall.SIGHUP)
	}
	ctx, stop := signal.NotifyContext(context.Background(), stops...)
	defer stop()
	context.AfterFunc(ctx, stop)
	// A log reader that went away makes writes to stderr fail, not the
	// process die of SIGPIPE with its last lines and requests.
	signal.Ignore(syscall.SIGPIPE)
	if err := run(ctx, os.Args, os.Getenv, os.Stdout, os.Stderr); err != nil {
		os.Exit(exitCode(err)) // run has reported it
	}
}

// Garbage collector settings for a small service: collect less often
// (GOGC=400: the live heap is a few MiB beside the read cache, so this
// costs little memory) but hold the Go heap to a soft limit: the heap the
// server needs plus the read cache. A busy server then spends little CPU
// on GC and stays within 64 MiB of RSS with SQLite's page caches (measured
// by bench/run). GOGC and GOMEMLIMIT in the environment win.
const (
	gcPercent     = 400
	heapAllowance = 20 << 20
)

// tuneGC applies gcPercent and a memory limit of heapAllowance plus the
// read cache's bytes, unless the environment sets its own; it returns
// that limit (nil when the environment set one), for password hashes to
// raise while they run.
func tuneGC(getenv func(string) string, cacheBytes int) *memoryLimit {
	if getenv("GOGC") == "" {
		debug.SetGCPercent(gcPercent)
	}
	if getenv("GOMEMLIMIT") != "" {
		return nil
	}
	l := &memoryLimit{base: int64(heapAllowance + cacheBytes), set: debug.SetMemoryLimit}
	debug.SetMemoryLimit(l.base)
	return l
}

// memoryLimit is the Go heap's soft limit tuneGC set: its base, plus what
// the password hashes running now have raised it by.
type memoryLimit struct {
	mu           sync.Mutex
	base, raised int64
	// set sets the process's limit: debug.SetMemoryLimit, or a test's
	// recorder (the limit is the process's, which other tests move too).
	set func(int64) int64
}

// raise adds n bytes to the limit until lower is called; on a nil limit
// (the environment's own) it does nothing. A password hash takes
// argon2id's memory (19 MiB) at once; under a limit that leaves no room
// for it the collector would run again and again while the hash fills it
// (two concurrent logins took twice as long). Raising the limit only while
// hashes run keeps it tight for everything else.
func (l *memoryLimit) raise(n int64) (lower func()) {
	if l == nil {
		return func() {}
	}
	move := func(by int64) {
		l.mu.Lock()
		defer l.mu.Unlock()
		l.raised += by
		l.set(l.base + l.raised)
	}
	move(n)
	return func() { move(-n) }
}

// exitCode is 2 for a command-line mistake, 1 for anything else.
func exitCode(err error) int {
	var ue usageError
	if errors.As(err, &ue) {
		return 2
	}
	return 1
}

// usageError is a mistake in the command line.
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

// config is everything the server is told at start.
type config struct {
	addr      string
	db        string // a SQLite path or a PostgreSQL URL
	logFormat string
	logLevel  string

	tokenFile         string
	token             string // from -token-file or USERSVC_TOKEN; "" means none
	rateLimit         float64
	rateBurst         int
	max404            int
	maxLoginFailures  int
	trustProxy        trustedProxies
	allowedHosts      []string
	metricsPublic     bool
	maxGoals          int
	maxConns          int
	maxConnsPerClient int
	dbMaxConns        int
	admin             bool
	cacheMiB          int

	// now is the clock of the limits' windows; nil means time.Now. Tests
	// inject one to move time without sleeping.
	now func() time.Time

	// memoryLimit is the GC memory limit serve set (nil when none), which
	// password hashes raise while they run.
	memoryLimit *memoryLimit

	// password sets the argon2id cost. It is not a flag: production always
	// uses defaultPasswordParams; tests lower it to stay fast.
	password passwordParams
}

// minTokenLength is the shortest bearer token accepted: a short one can be
// guessed by anyone who can reach the port.
const minTokenLength = 16

// envName is the USERSVC_ variable of a flag: -rate-limit is
// USERSVC_RATE_LIMIT.
func envName(flagName string) string {
	return "USERSVC_" + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// parseConfig reads the flags, falling back to each flag's USERSVC_
// variable, then to its default. A flag wins over its variable. -h prints
// the usage on stdout and returns flag.ErrHelp. The settings only serving
// uses (the token, -trust-proxy, -allowed-hosts) are read only when no
// command is given.
func parseConfig(args []string, getenv func(string) string, stdout io.Writer) (config, []string, error) {
	cfg := config{password: defaultPasswordParams}
	var trustProxy, allowedHosts string
	fs := newFlagSet(&cfg, &trustProxy, &allowedHosts)
	if err := applyEnv(fs, getenv); err != nil {
		return cfg, nil, err
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			usage(fs, stdout)
			return cfg, nil, err
		}
		return cfg, nil, usageError{err.Error() + " (try -h)"}
	}
	if err := checkFlags(&cfg); err != nil {
		return cfg, nil, err
	}
	if fs.NArg() > 0 {
		// A command (backup, version…) does not serve: the token, the
		// proxies and the hosts are none of its business, and a backup job
		// run as another user may not be able to read the token file.
		return cfg, fs.Args(), nil
	}
	var err error
	if cfg.trustProxy, err = parseTrustedProxies(trustProxy); err != nil {
		return cfg, nil, err
	}
	cfg.allowedHosts = parseHostList(allowedHosts)
	if cfg.token, err = loadToken(cfg.tokenFile, getenv("USERSVC_TOKEN")); err != nil {
		return cfg, nil, err
	}
	return cfg, fs.Args(), nil
}

// checkFlags refuses flag values that make no sense.
func checkFlags(cfg *config) error {
	cfg.logFormat = strings.ToLower(cfg.logFormat) // as -log-level takes WARN
	var err error
	if cfg.db, err = checkDBName("-db", cfg.db); err != nil {
		return err
	}
	if cfg.db == "" {
		return usageError{"-db must name a SQLite file or a postgres:// URL"}
	}
	if cfg.logFormat != "text" && cfg.logFormat != "json" {
		return usageError{fmt.Sprintf("-log-format must be text or json, not %q", cfg.logFormat)}
	}
	if _, err := parseLevel(cfg.logLevel); err != nil {
		return usageError{err.Error()}
	}
	if !(cfg.rateLimit >= 0) || math.IsInf(cfg.rateLimit, 1) || cfg.rateBurst < 1 && cfg.rateLimit > 0 || cfg.max404 < 0 || cfg.maxLoginFailures < 0 {
		// !(>= 0) refuses NaN too, which passed "< 0" and then turned the limit off.
		return usageError{"-rate-limit (a number), -max-404 and -max-login-failures must be 0 or more (0 turns each off), and -rate-burst at least 1"}
	}
	if cfg.maxGoals < 1 || cfg.maxConns < 1 || cfg.maxConnsPerClient < 0 || cfg.dbMaxConns < 1 || cfg.cacheMiB < 0 {
		return usageError{"-max-goals, -max-conns and -db-max-conns must be at least 1, and -max-conns-per-client and -cache-size 0 or more"}
	}
	if cfg.cacheMiB > maxCacheMiB {
		return usageError{fmt.Sprintf("-cache-size must be at most %d (MiB)", maxCacheMiB)}
	}
	return nil
}

// loadToken reads the bearer token from file, else takes envToken, trimmed
// of surrounding white space either way (the header's token is trimmed
// too, so a stray space or newline cannot lock every client out). A token
// file that is empty is an error, so a mistake cannot silently turn the
// token off, and so is a USERSVC_TOKEN of white space only; so is a token shorter than minTokenLength, or one holding a
// control character a header cannot carry.
func loadToken(file, envToken string) (string, error) {
	token := strings.TrimSpace(envToken)
	if token == "" && envToken != "" && file == "" {
		return "", errors.New("USERSVC_TOKEN is set but blank: set the token, or unset the variable to serve without one")
	}
	if file != "" {
		b, err := os.ReadFile(file)
		if err != nil {
			return "", fmt.Errorf("read token file: %w", err)
		}
		// A byte-order mark, which some editors put first, is no part of
		// the token (a client would not send it).
		if token = strings.TrimSpace(strings.TrimPrefix(string(b), "\ufeff")); token == "" {
			return "", fmt.Errorf("token file %s is empty", file)
		}
	}
	if n := utf8.RuneCountInString(token); token != "" && n < minTokenLength {
		return "", fmt.Errorf("the bearer token is %d characters long: use at least %d (for example: head -c 32 /dev/urandom | base64)", n, minTokenLength)
	}
	// No header can carry a line break or another control character but
	// the tab: such a token would start a service no request can
	// authenticate to.
	if i := strings.IndexFunc(token, unsendable); i >= 0 {
		r, _ := utf8.DecodeRuneInString(token[i:])
		return "", fmt.Errorf("the bearer token holds the control character %q at byte %d, which no request can send: put the token alone on one line", r, i)
	}
	return token, nil
}

// unsendable reports whether a header value cannot carry r: a control
// character other than the tab.
func unsendable(r rune) bool { return unicode.IsControl(r) && r != '\t' }

// checkExposure refuses to listen beyond loopback without a bearer token:
// anyone who can reach the port could read and change every user.
func checkExposure(cfg config) error {
	_, port, err := net.SplitHostPort(cfg.addr)
	if err != nil {
		return usageError{fmt.Sprintf("-addr %q is not host:port, such as 127.0.0.1:8080 (%v)", cfg.addr, err)}
	}
	if n, err := strconv.Atoi(port); strings.Trim(port, "0123456789") == "" && port != "" && (err != nil || n > 65535) {
		return usageError{fmt.Sprintf("-addr %q: the port must be 0 to 65535", cfg.addr)}
	}
	if cfg.token != "" || isLoopback(cfg.addr) {
		return nil
	}
	return fmt.Errorf("refusing to listen on %s without a bearer token: set USERSVC_TOKEN or -token-file, or listen on 127.0.0.1", cfg.addr)
}

// isLoopback reports whether addr's host is a loopback address or
// "localhost". An empty host (":8080") means every interface.
func isLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// newFlagSet defines every flag, each setting its part of cfg (or the
// string that parseConfig reads -trust-proxy or -allowed-hosts from).
func newFlagSet(cfg *config, trustProxy, allowedHosts *string) *flag.FlagSet {
	fs := flag.NewFlagSet("usersvc", flag.ContinueOnError)
	fs.SetOutput(io.Discard) // run reports errors once, in the log format
	fs.StringVar(&cfg.addr, "addr", "127.0.0.1:8080", "listen address")
	fs.StringVar(&cfg.db, "db", "usersvc.db", "SQLite database file (created with its schema when missing), or a postgres:// URL")
	fs.IntVar(&cfg.dbMaxConns, "db-max-conns", defaultDBMaxConns, "PostgreSQL connections this instance may open (ignored for SQLite)")
	fs.StringVar(&cfg.logFormat, "log-format", "text", "log format: text or json")
	fs.StringVar(&cfg.logLevel, "log-level", "info", "log level: debug, info, warn or error")
	fs.StringVar(&cfg.tokenFile, "token-file", "", "file holding the bearer token every /api/ request must send (or set USERSVC_TOKEN)")
	fs.Float64Var(&cfg.rateLimit, "rate-limit", 100, "requests per second per client address; 0 turns it off")
	fs.IntVar(&cfg.rateBurst, "rate-burst", 200, "bucket size for -rate-limit")
	fs.IntVar(&cfg.max404, "max-404", 100, "404 answers per client address per 10 minutes, then 429; 0 turns it off")
	fs.IntVar(&cfg.maxLoginFailures, "max-login-failures", 5, "failed authenticates per username per 15 minutes, then 429; 0 turns it off")
	fs.StringVar(trustProxy, "trust-proxy", "", "comma-separated CIDRs of the proxies in front (10.0.0.0/8,127.0.0.1/32); only peers in them may set X-Forwarded-For")
	fs.StringVar(allowedHosts, "allowed-hosts", "", "extra Host names accepted when no token is set (comma-separated)")
	fs.BoolVar(&cfg.metricsPublic, "metrics-public", false, "serve /metrics without the bearer token")
	fs.IntVar(&cfg.maxGoals, "max-goals", defaultMaxGoals, "goals one user may have")
	fs.IntVar(&cfg.maxConns, "max-conns", 1024, "open connections in all; more wait in the kernel's backlog")
	fs.IntVar(&cfg.maxConnsPerClient, "max-conns-per-client", 64, "open connections from one client address (an IPv6 /64); more are closed at once; 0 turns it off")
	fs.BoolVar(&cfg.admin, "admin", true, "serve the admin page at /admin/")
	fs.IntVar(&cfg.cacheMiB, "cache-size", defaultCacheMiB, "MiB of user rows the read cache holds (SQLite only; its index takes about a quarter more); 0 turns it off")
	return fs
}

// applyEnv sets each flag from its USERSVC_ variable when that is set, so
// that a flag given on the command line (parsed after) wins.
func applyEnv(fs *flag.FlagSet, getenv func(string) string) error {
	var err error
	fs.VisitAll(func(f *flag.Flag) {
		if v := getenv(envName(f.Name)); v != "" && err == nil {
			if e := f.Value.Set(v); e != nil {
				err = usageError{fmt.Sprintf("%s=%q: %s (try -h)", envName(f.Name), v, valueProblem(f, e))}
			}
		}
	})
	return err
}

// valueProblem says what is wrong with a value f refused, in words where
// the flag package's own are terse ("parse error").
func valueProblem(f *flag.Flag, err error) string {
	if b, ok := f.Value.(interface{ IsBoolFlag() bool }); ok && b.IsBoolFlag() {
		return "must be true or false"
	}
	return fmt.Sprintf("not a value for -%s (%v)", f.Name, err)
}

// usage prints the commands and every flag with its variable.
func usage(fs *flag.FlagSet, w io.Writer) {
	fmt.Fprint(w, `usersvc serves a users and goals JSON API over an embedded SQLite database
(or PostgreSQL, when -db is a postgres:// URL).

Usage:
  usersvc [flags]              serve
  usersvc [flags] backup FILE  write a consistent copy of the SQLite database to FILE
  usersvc copy SRC DST         copy every user and goal from database SRC to the
                               empty database DST (each a SQLite path or a URL)
  usersvc openapi              print the OpenAPI 3.1 document (JSON)
  usersvc version              print the version

Flags (each also read from its environment variable; a flag wins):
`)
	fs.VisitAll(func(f *flag.Flag) {
		def := ""
		if f.DefValue != "" {
			def = fmt.Sprintf(" (default %q)", f.DefValue)
		}
		fmt.Fprintf(w, "  -%s  %s%s\n      %s\n", f.Name, envName(f.Name), def, f.Usage)
	})
	fmt.Fprint(w, "  USERSVC_TOKEN\n      the bearer token itself, when there is no -token-file\n")
}

// parseLevel reads a -log-level value.
func parseLevel(s string) (slog.Level, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(s)); err != nil {
		return l, fmt.Errorf("-log-level must be debug, info, warn or error, not %q", s)
	}
	return l, nil
}

// newLogger returns the process logger in the configured format, writing
// to w through a buffer (see bufferedLog). Closing it writes out what it
// still holds.
func newLogger(cfg config, w io.Writer) (*slog.Logger, io.Closer) {
	level, _ := parseLevel(cfg.logLevel)
	opts := &slog.HandlerOptions{Level: level}
	var logger atomic.Pointer[slog.Logger] // for the dropped lines' warning, made once the logger is
	buf := newBufferedLog(w, func(lines int) {
		logger.Load().Warn("log lines dropped: the log's sink did not take them (a reader of stderr that stopped reading?)", "lines", lines)
	})
	var h slog.Handler = slog.NewTextHandler(buf, opts)
	if cfg.logFormat == "json" {
		h = slog.NewJSONHandler(buf, opts)
	}
	logger.Store(slog.New(flushingHandler{Handler: h, buf: buf, direct: true, json: cfg.logFormat == "json"}))
	return logger.Load(), buf
}

// run is the whole program: parse, then serve or run a subcommand. It
// returns when ctx ends (after a graceful stop) or on a start-up error,
// which it has reported on stderr, in the log format when one was set.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) (err error) {
	cfg, rest, err := parseConfig(args[1:], getenv, stdout)
	if errors.Is(err, flag.ErrHelp) {
		return nil
	}
	defer func() {
		if err != nil {
			reportError(stderr, logFormatAsked(args[1:], getenv), err)
		}
	}()
	if err != nil {
		return err
	}
	if len(rest) > 0 {
		return runCommand(ctx, cfg, rest, stdout)
	}
	logger, logs := newLogger(cfg, stderr)
	defer logs.Close()
	return serve(ctx, cfg, logger)
}

// logFormatAsked is the -log-format the command line (or else its
// variable) asks for, found without setting any other flag: what failed
// may be another flag or variable, so the error still comes in the format
// asked. Like fs.Parse it stops at the first argument that is not a flag
// or a flag's value, and the last -log-format wins.
func logFormatAsked(args []string, getenv func(string) string) string {
	format := getenv(envName("log-format"))
	var scratch config
	var ignored string
	fs := newFlagSet(&scratch, &ignored, &ignored)
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" || len(a) < 2 || a[0] != '-' {
			break
		}
		name, value, hasValue := strings.Cut(strings.TrimLeft(a, "-"), "=")
		f := fs.Lookup(name)
		if f == nil || hasValue {
			if name == "log-format" {
				format = value
			}
			continue
		}
		if b, ok := f.Value.(interface{ IsBoolFlag() bool }); ok && b.IsBoolFlag() {
			continue
		}
		if i+1 < len(args) {
			i++
			if name == "log-format" {
				format = args[i]
			}
		}
	}
	return format
}

// reportError prints a start-up error as one line: a JSON log line with
// -log-format json, else "usersvc: …".
func reportError(w io.Writer, format string, err error) {
	if strings.EqualFold(format, "json") { // as -log-format takes it
		slog.New(slog.NewJSONHandler(w, nil)).Error(err.Error(), "exit", exitCode(err))
		return
	}
	// One line, as promised: a driver's message may span several
	// ("failed to connect…:\n\thostname resolving error…").
	fmt.Fprintln(w, "usersvc:", oneLine.Replace(err.Error()))
}

// oneLine joins the lines of an error message.
var oneLine = strings.NewReplacer("\n\t", " ", "\r\n", "; ", "\n", "; ")

// runCommand runs a subcommand: version, backup or copy.
func runCommand(ctx context.Context, cfg config, rest []string, stdout io.Writer) error {
	switch rest[0] {
	case "version":
		if len(rest) != 1 {
			return usageError{"usage: usersvc version"}
		}
		fmt.Fprintln(stdout, versionString())
		return nil
	case "openapi":
		if len(rest) != 1 {
			return usageError{"usage: usersvc openapi"}
		}
		_, err := stdout.Write(openapiJSON)
		if errors.Is(err, syscall.EPIPE) {
			return nil // its reader had enough (usersvc openapi | head)
		}
		return err
	case "backup":
		if len(rest) != 2 || rest[1] == "" || strings.HasPrefix(rest[1], "-") {
			return usageError{"usage: usersvc [-db FILE] backup COPY (flags go before the command)"}
		}
		if err := backupDatabase(ctx, cfg.db, rest[1]); err != nil {
			return fmt.Errorf("backup: %w", interrupted(ctx, err, "no backup was written"))
		}
		fmt.Fprintf(stdout, "backup of %s written to %s\n", cfg.db, rest[1])
		return nil
	case "copy":
		if len(rest) != 3 || rest[1] == "" || rest[2] == "" || strings.HasPrefix(rest[1], "-") || strings.HasPrefix(rest[2], "-") {
			return usageError{"usage: usersvc copy SRC DST (each a SQLite path or a postgres:// URL)"}
		}
		src, err := checkDBName("copy's SRC", rest[1])
		if err != nil {
			return err
		}
		dst, err := checkDBName("copy's DST", rest[2])
		if err != nil {
			return err
		}
		return copyCommand(ctx, src, dst, stdout)
	}
	return usageError{fmt.Sprintf("unknown command %q (try -h)", rest[0])}
}

// interrupted says so when a command failed because a stop signal (Ctrl-C,
// SIGTERM) cancelled ctx, and what it left behind: the bare "context
// canceled" or "interrupted (9)" an engine returns does not tell a user
// whether to clean up.
func interrupted(ctx context.Context, err error, left string) error {
	if ctx.Err() == nil {
		return err
	}
	return fmt.Errorf("interrupted, %s (%w)", left, err)
}

// versionString is the module version and VCS revision the binary was
// built from.
func versionString() string {
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return "usersvc (unknown version)"
	}
	version, revision, modified := info.Main.Version, "", ""
	for _, s := range info.Settings {
		switch s.Key {
		case "vcs.revision":
			revision = s.Value
		case "vcs.modified":
			if s.Value == "true" {
				modified = "+dirty"
			}
		}
	}
	if revision == "" {
		revision = "unknown revision"
	}
	return fmt.Sprintf("usersvc %s (%s%s, %s)", version, revision, modified, info.GoVersion)
}

// httpTimeouts bound how long a client may take over each part of a
// request, so a slow or stuck client cannot hold a connection forever.
type httpTimeouts struct {
	readHeader, read, write, idle time.Duration
}

// productionTimeouts leave room for a burst of argon2id hashes (each
// request waits its turn) while cutting off clients that stall.
var productionTimeouts = httpTimeouts{readHeader: 5 * time.Second, read: 30 * time.Second, write: 60 * time.Second, idle: 60 * time.Second}

// maxHeaderBytes caps the request line and headers; more is a 431.
const maxHeaderBytes = 64 << 10

// newHTTPServer wraps h in an http.Server with every timeout and the header
// size cap set.
func newHTTPServer(h http.Handler, logger *slog.Logger, t httpTimeouts) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: t.readHeader,
		ReadTimeout:       t.read,
		WriteTimeout:      t.write,
		IdleTimeout:       t.idle,
		MaxHeaderBytes:    maxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
		// OPTIONS * goes through the middleware like any request (its
		// Host check, request id and headers), not net/http's bare 200.
		DisableGeneralOptionsHandler: true,
	}
}

// serve opens the database, listens and serves until ctx ends, then stops
// gracefully: no new connections, requests in flight finish, the database
// closes.
func serve(ctx context.Context, cfg config, logger *slog.Logger) error {
	if err := checkExposure(cfg); err != nil {
		return err
	}
	// The process's own environment, not run's getenv: the runtime read
	// GOGC and GOMEMLIMIT from it at start.
	cfg.memoryLimit = tuneGC(os.Getenv, cfg.cacheMiB<<20)
	// The database first: the port opens only once requests can be
	// answered (a load balancer's connections are refused, not left hanging,
	// while the database opens or when it cannot be opened).
	newFile := !isPostgresURL(cfg.db) && !exists(cfg.db)
	upgrading := func(from, to int) {
		logger.Info("upgrading the database's schema: the server listens once it is done (one transaction: a stop meanwhile changes nothing)",
			"db", describeDB(cfg.db), "from", from, "to", to)
	}
	st, err := openStore(ctx, cfg.db, storeOptions{exclusive: true, maxGoals: cfg.maxGoals, maxConns: cfg.dbMaxConns, onUpgrade: upgrading})
	if err != nil {
		return interrupted(ctx, err, "before serving: an upgrade of the schema, if one ran, changed nothing and runs again at the next start")
	}
	defer st.Close()
	ln, err := listen(cfg)
	if err != nil {
		if newFile { // this start made it, and no request has reached it
			st.Close()
			removeSQLiteFiles(cfg.db)
		}
		return err
	}
	srv := newHTTPServer(newServer(cfg, logger, st), logger, productionTimeouts)
	srv.BaseContext = func(net.Listener) context.Context { return context.WithoutCancel(ctx) }
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	logger.Info("serving", "addr", ln.Addr().String(), "db", st.eng.describe(), "version", versionString())
	select {
	case err := <-errc:
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	logger.Info("stopping: finishing requests in flight")
	shutdownCtx, cancel := context.WithTimeout(context.Background(), shutdownWait)
	defer cancel()
	if err := srv.Shutdown(shutdownCtx); err != nil {
		// Requests still in flight: a client trickling its body, one that
		// does not read its answer. Theirs is the wait that ran out; the
		// stop itself goes on (it ended with exit 1 and no "stopped").
		logger.Warn(fmt.Sprintf("stopping: connections still busy after %v are closed", shutdownWait), "err", err)
		srv.Close() //nolint:errcheck // closing what is left; nothing to report
	}
	switch err := st.Close(); {
	case errors.Is(err, errOrphanedLog):
		logger.Warn("database "+cfg.db+": "+err.Error(), "db", cfg.db)
	case err != nil:
		return fmt.Errorf("close database: %w", err)
	}
	logger.Info("stopped")
	return nil
}

// shutdownWait bounds how long a stop waits for requests in flight. A
// variable for the test that stops with a request stalled.
var shutdownWait = 30 * time.Second

// exists reports whether there is a file at path.
func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

// removeSQLiteFiles removes the database file at path and its side files.
func removeSQLiteFiles(path string) {
	for _, suffix := range []string{"", "-wal", "-shm"} {
		os.Remove(path + suffix) //nolint:errcheck // best effort: only a new, empty database
	}
}

// listen opens the listening socket with its connection limits: at most
// -max-conns open in all (more wait in the kernel's backlog) and
// -max-conns-per-client from one client address (more are closed at once).
func listen(cfg config) (net.Listener, error) {
	ln, err := net.Listen("tcp", cfg.addr)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", cfg.addr, err)
	}
	// checkExposure trusted the name "localhost"; what it resolved to is
	// known only now.
	if tcp, ok := ln.Addr().(*net.TCPAddr); cfg.token == "" && (!ok || !tcp.IP.IsLoopback()) {
		ln.Close()
		return nil, fmt.Errorf("refusing to listen on %s (%s is not loopback) without a bearer token: set USERSVC_TOKEN or -token-file", cfg.addr, ln.Addr())
	}
	return netutil.LimitListener(limitConnsPerClient(ln, cfg.maxConnsPerClient, cfg.trustProxy), cfg.maxConns), nil
}
