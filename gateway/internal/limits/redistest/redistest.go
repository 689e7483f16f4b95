// Package redistest runs a real redis-server for integration tests: on a free
// loopback port, in a temporary directory, stopped when the test ends. A
// missing redis-server fails the test rather than skipping it, so CI cannot
// pass without having exercised Redis.
package redistest

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// Port range for test servers (loopback ports assigned to this area's tests).
const (
	FirstPort = 18250
	LastPort  = 18299
)

// Server is one redis-server process. Its data survives Restart (append-only
// file, fsync on every write), like a production Redis with persistence.
type Server struct {
	t   testing.TB
	bin string
	// extra redis-server arguments after the defaults
	extra []string
	dir   string
	Port  int
	cmd   *exec.Cmd
	done  chan struct{}
}

// Start launches redis-server on the first free port of the range; extra
// arguments override the defaults (e.g. "--appendfsync", "everysec").
func Start(t testing.TB, extra ...string) *Server {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		t.Fatalf("redis-server is required for these tests (scripts/deps-apt.sh installs it): %v", err)
	}
	s := &Server{t: t, dir: t.TempDir(), bin: bin, extra: extra}
	for port := FirstPort; port <= LastPort; port++ {
		// The port stays ours across Stop/Restart: test binaries of other
		// packages running at the same time skip it instead of taking it while
		// our server is down (and then answering our clients).
		lock, ok := lockPort(port)
		if !ok {
			continue
		}
		l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		if err != nil {
			lock.Close()
			continue
		}
		l.Close()
		s.Port = port
		if err := s.start(); err == nil {
			t.Cleanup(func() { s.Stop(); lock.Close() })
			return s
		}
		lock.Close()
	}
	t.Fatalf("no free port for redis-server in %d-%d", FirstPort, LastPort)
	return nil
}

// Addr is host:port.
func (s *Server) Addr() string { return fmt.Sprintf("127.0.0.1:%d", s.Port) }

// URL is the redis:// URL of database 0.
func (s *Server) URL() string { return "redis://" + s.Addr() + "/0" }

// Client returns a new client, closed when the test ends.
func (s *Server) Client() *redis.Client {
	c := redis.NewClient(&redis.Options{Addr: s.Addr()})
	s.t.Cleanup(func() { c.Close() })
	return c
}

func (s *Server) start() error {
	cmd := exec.Command(s.bin,
		"--port", strconv.Itoa(s.Port), "--bind", "127.0.0.1", "--dir", s.dir,
		"--save", "", "--appendonly", "yes", "--appendfsync", "always",
		"--logfile", filepath.Join(s.dir, "redis.log"), "--daemonize", "no")
	cmd.Args = append(cmd.Args, s.extra...)
	// Dies with the test process, even when a timeout kills it before cleanups run.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return err
	}
	s.cmd = cmd
	s.done = make(chan struct{})
	go func() { _ = cmd.Wait(); close(s.done) }()
	c := redis.NewClient(&redis.Options{Addr: s.Addr(), MaxRetries: -1})
	defer c.Close()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-s.done:
			log, _ := os.ReadFile(filepath.Join(s.dir, "redis.log"))
			return fmt.Errorf("redis-server exited at start: %s", log)
		default:
		}
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		err := c.Ping(ctx).Err()
		cancel()
		if err == nil {
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	s.kill()
	return fmt.Errorf("redis-server on %d did not answer PING", s.Port)
}

func (s *Server) kill() {
	if s.cmd != nil && s.cmd.Process != nil {
		_ = s.cmd.Process.Kill()
		<-s.done
	}
	s.cmd = nil
}

// Stop shuts the server down (SIGTERM, then SIGKILL after 5s); safe to repeat.
func (s *Server) Stop() {
	if s.cmd == nil {
		return
	}
	_ = s.cmd.Process.Signal(os.Interrupt)
	select {
	case <-s.done:
	case <-time.After(5 * time.Second):
		_ = s.cmd.Process.Kill()
		<-s.done
	}
	s.cmd = nil
}

// Restart starts the server again on the same port with the same data.
func (s *Server) Restart() {
	s.t.Helper()
	s.Stop()
	var err error
	for range 50 {
		if err = s.start(); err == nil {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	s.t.Fatalf("redis-server did not restart on %d: %v", s.Port, err)
}

// lockPort takes an exclusive, non-blocking lock on a per-port file; the
// kernel drops it when the process exits, however it exits.
func lockPort(port int) (*os.File, bool) {
	f, err := os.OpenFile(filepath.Join(os.TempDir(), fmt.Sprintf("vlcache-redistest-%d.lock", port)), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, false
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		return nil, false
	}
	return f, true
}
