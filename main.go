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
	"net"
	"net/http"
	"os"
	"os/signal"
	"runtime/debug"
	"strings"
	"syscall"
	"time"
)

func main() {
	tuneGC(os.Getenv)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args, os.Getenv, os.Stdout, os.Stderr); err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, "usersvc:", err)
		}
		os.Exit(exitCode(err))
	}
}

// Garbage collector settings for a small service: collect less often
// (GOGC=400: the live heap is a few MiB, so this costs little memory) but
// hold the Go heap to a soft limit, so a busy server spends less CPU on GC
// and still stays within 64 MiB of RSS with SQLite's page caches (measured
// by BenchmarkServerRSS1M). GOGC and GOMEMLIMIT in the environment win.
const (
	gcPercent   = 400
	memoryLimit = 24 << 20
)

// tuneGC applies gcPercent and memoryLimit unless the environment sets its
// own.
func tuneGC(getenv func(string) string) {
	if getenv("GOGC") == "" {
		debug.SetGCPercent(gcPercent)
	}
	if getenv("GOMEMLIMIT") == "" {
		debug.SetMemoryLimit(memoryLimit)
	}
}

// exitCode is 2 for a command-line mistake (and -h), 1 for anything else.
func exitCode(err error) int {
	var ue usageError
	if errors.Is(err, flag.ErrHelp) || errors.As(err, &ue) {
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
	dbPath    string
	logFormat string
	logLevel  string

	tokenFile        string
	token            string // from -token-file or USERSVC_TOKEN; "" means none
	rateLimit        float64
	rateBurst        int
	max404           int
	maxLoginFailures int
	trustProxy       bool
	metricsPublic    bool

	// now is the clock of the limits' windows; nil means time.Now. Tests
	// inject one to move time without sleeping.
	now func() time.Time

	// password sets the argon2id cost. It is not a flag: production always
	// uses defaultPasswordParams; tests lower it to stay fast.
	password passwordParams
}

// envName is the USERSVC_ variable of a flag: -rate-limit is
// USERSVC_RATE_LIMIT.
func envName(flagName string) string {
	return "USERSVC_" + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// parseConfig reads the flags, falling back to each flag's USERSVC_
// variable, then to its default. A flag wins over its variable.
func parseConfig(args []string, getenv func(string) string, stderr io.Writer) (config, []string, error) {
	cfg := config{password: defaultPasswordParams}
	fs := flag.NewFlagSet("usersvc", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { usage(fs) }
	fs.StringVar(&cfg.addr, "addr", "127.0.0.1:8080", "listen address")
	fs.StringVar(&cfg.dbPath, "db", "usersvc.db", "database file, created with its schema when missing")
	fs.StringVar(&cfg.logFormat, "log-format", "text", "log format: text or json")
	fs.StringVar(&cfg.logLevel, "log-level", "info", "log level: debug, info, warn or error")
	fs.StringVar(&cfg.tokenFile, "token-file", "", "file holding the bearer token every /api/ request must send (or set USERSVC_TOKEN)")
	fs.Float64Var(&cfg.rateLimit, "rate-limit", 100, "requests per second per client address; 0 turns it off")
	fs.IntVar(&cfg.rateBurst, "rate-burst", 200, "bucket size for -rate-limit")
	fs.IntVar(&cfg.max404, "max-404", 100, "404 answers per client address per 10 minutes, then 429; 0 turns it off")
	fs.IntVar(&cfg.maxLoginFailures, "max-login-failures", 5, "failed authenticates per username per 15 minutes, then 429; 0 turns it off")
	fs.BoolVar(&cfg.trustProxy, "trust-proxy", false, "take the client address from X-Forwarded-For (only behind your own proxy)")
	fs.BoolVar(&cfg.metricsPublic, "metrics-public", false, "serve /metrics without the bearer token")
	if err := applyEnv(fs, getenv); err != nil {
		return cfg, nil, err
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return cfg, nil, err
		}
		return cfg, nil, usageError{err.Error()}
	}
	if cfg.logFormat != "text" && cfg.logFormat != "json" {
		return cfg, nil, usageError{fmt.Sprintf("-log-format must be text or json, not %q", cfg.logFormat)}
	}
	if _, err := parseLevel(cfg.logLevel); err != nil {
		return cfg, nil, usageError{err.Error()}
	}
	if cfg.rateLimit < 0 || cfg.rateBurst < 1 && cfg.rateLimit > 0 || cfg.max404 < 0 || cfg.maxLoginFailures < 0 {
		return cfg, nil, usageError{"-rate-limit, -max-404 and -max-login-failures must be 0 or more, and -rate-burst at least 1"}
	}
	token, err := loadToken(cfg.tokenFile, getenv("USERSVC_TOKEN"))
	if err != nil {
		return cfg, nil, err
	}
	cfg.token = token
	return cfg, fs.Args(), nil
}

// loadToken reads the bearer token from file (its trailing newline is not
// part of it), else takes envToken. A file that is empty is an error, so a
// mistake cannot silently turn the token off.
func loadToken(file, envToken string) (string, error) {
	if file == "" {
		return strings.TrimSpace(envToken), nil
	}
	b, err := os.ReadFile(file)
	if err != nil {
		return "", fmt.Errorf("read token file: %w", err)
	}
	token := strings.TrimRight(string(b), "\r\n")
	if strings.TrimSpace(token) == "" {
		return "", fmt.Errorf("token file %s is empty", file)
	}
	return token, nil
}

// checkExposure refuses to listen beyond loopback without a bearer token:
// anyone who can reach the port could read and change every user.
func checkExposure(cfg config) error {
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

// applyEnv sets each flag from its USERSVC_ variable when that is set, so
// that a flag given on the command line (parsed after) wins.
func applyEnv(fs *flag.FlagSet, getenv func(string) string) error {
	var err error
	fs.VisitAll(func(f *flag.Flag) {
		if v := getenv(envName(f.Name)); v != "" && err == nil {
			if e := f.Value.Set(v); e != nil {
				err = usageError{fmt.Sprintf("%s=%q: %v", envName(f.Name), v, e)}
			}
		}
	})
	return err
}

// usage prints the commands and every flag with its variable.
func usage(fs *flag.FlagSet) {
	w := fs.Output()
	fmt.Fprint(w, `usersvc serves a users and goals JSON API over an embedded SQLite database.

Usage:
  usersvc [flags]              serve
  usersvc [flags] backup FILE  write a consistent copy of the database to FILE
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

// newLogger returns the process logger in the configured format.
func newLogger(cfg config, w io.Writer) *slog.Logger {
	level, _ := parseLevel(cfg.logLevel)
	opts := &slog.HandlerOptions{Level: level}
	if cfg.logFormat == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// run is the whole program: parse, then serve or run a subcommand. It
// returns when ctx ends (after a graceful stop) or on a start-up error.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	cfg, rest, err := parseConfig(args[1:], getenv, stderr)
	if err != nil {
		return err
	}
	if len(rest) > 0 {
		switch rest[0] {
		case "version":
			fmt.Fprintln(stdout, versionString())
			return nil
		case "backup":
			if len(rest) != 2 {
				return usageError{"usage: usersvc [-db FILE] backup COPY"}
			}
			if err := backupDatabase(ctx, cfg.dbPath, rest[1]); err != nil {
				return fmt.Errorf("backup: %w", err)
			}
			fmt.Fprintf(stdout, "backup of %s written to %s\n", cfg.dbPath, rest[1])
			return nil
		default:
			return usageError{fmt.Sprintf("unknown command %q (try -h)", rest[0])}
		}
	}
	return serve(ctx, cfg, newLogger(cfg, stderr))
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
var productionTimeouts = httpTimeouts{readHeader: 5 * time.Second, read: 30 * time.Second, write: 60 * time.Second, idle: 120 * time.Second}

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
	}
}

// serve opens the database, listens and serves until ctx ends, then stops
// gracefully: no new connections, requests in flight finish, the database
// closes.
func serve(ctx context.Context, cfg config, logger *slog.Logger) error {
	if err := checkExposure(cfg); err != nil {
		return err
	}
	st, err := openStore(ctx, cfg.dbPath, storeOptions{})
	if err != nil {
		return err
	}
	defer st.Close()
	ln, err := net.Listen("tcp", cfg.addr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", cfg.addr, err)
	}
	srv := newHTTPServer(newServer(cfg, logger, st), logger, productionTimeouts)
	srv.BaseContext = func(net.Listener) context.Context { return context.WithoutCancel(ctx) }
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	logger.Info("serving", "addr", ln.Addr().String(), "db", cfg.dbPath, "version", versionString())
	select {
	case err := <-errc:
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	logger.Info("stopping: finishing requests in flight")
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := srv.Shutdown(shutdownCtx); err != nil {
		return fmt.Errorf("graceful stop: %w", err)
	}
	if err := st.Close(); err != nil {
		return fmt.Errorf("close database: %w", err)
	}
	logger.Info("stopped")
	return nil
}
