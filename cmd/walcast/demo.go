package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	mrand "math/rand/v2"
	"net"
	"time"

	"github.com/jackc/pgx/v5"
	"golang.org/x/sync/errgroup"

	"github.com/walcast/walcast/broadcast"
	"github.com/walcast/walcast/internal/launch"
	"github.com/walcast/walcast/schema"
)

// demoCommittees and demoCandidates size the simulated election.
const (
	demoCommittees = 6
	demoCandidates = 4
	demoAgents     = 20 // user ids 1..20 add guarantees and mark attendance
)

// runDemo is `walcast demo`: a throwaway PostgreSQL with the election
// schema, walcast itself with the in-process bus, and a simulated election
// writing to the tables, until ctx is cancelled (Ctrl-C). It prints the
// dashboard URL with a token; everything it started is stopped and removed
// on the way out.
func runDemo(ctx context.Context, cfg *Config, stdout, stderr io.Writer) (err error) {
	log, err := newLogger(cfg, stderr)
	if err != nil {
		return err
	}
	fmt.Fprintln(stdout, "walcast demo: starting a throwaway PostgreSQL…")
	// The launcher's default settings are the tests' (wal_level=logical,
	// fsync off): the data only has to live as long as the demo. Fresh:
	// no cached template outlives the demo.
	pg, err := launch.StartPostgres(ctx, launch.PostgresConfig{Name: "demo", Fresh: true})
	if err != nil {
		return fmt.Errorf("start postgres: %w", err)
	}
	defer func() {
		if stopErr := pg.Close(); stopErr != nil && err == nil {
			err = stopErr
		}
	}()
	dbURL := pg.URL()
	electors, err := seedDemo(ctx, dbURL)
	if err != nil {
		return err
	}

	secretBytes := make([]byte, 32)
	rand.Read(secretBytes)
	secret := hex.EncodeToString(secretBytes)
	appCfg, _, err := parseConfig(cmdRun, []string{"--database-url", dbURL, "--listen", cfg.Listen, "--jwt-secret", secret},
		func(string) string { return "" })
	if err != nil {
		return err
	}
	appCfg.LogLevel, appCfg.LogFormat = cfg.LogLevel, cfg.LogFormat
	app := NewApp(cmdRun, appCfg, log)

	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return app.Run(gctx) })
	g.Go(func() error {
		addr, err := app.Addr(gctx)
		if err != nil {
			return nil // walcast did not start; its error is the one to report
		}
		if err := waitStreaming(gctx, app); err != nil {
			return nil
		}
		if err := printDemoBanner(stdout, addr, secret, dbURL, pg.Dir()); err != nil {
			return err
		}
		return runDemoWorkload(gctx, dbURL, electors, log.With("component", "demo-workload"))
	})
	err = g.Wait()
	if errors.Is(err, context.Canceled) {
		err = nil
	}
	fmt.Fprintln(stdout, "walcast demo: stopped; removing", pg.Dir())
	return err
}

// waitStreaming waits until capture streams, so that the workload's first
// changes are captured (a replication slot sees only what follows it).
func waitStreaming(ctx context.Context, app *App) error {
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	for !app.Status().Streaming {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
	return nil
}

func printDemoBanner(w io.Writer, addr, secret, dbURL, dir string) error {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("listen address %q: %w", addr, err)
	}
	admin, err := broadcast.MintToken([]byte(secret), 1, "admin", nil, 12*time.Hour)
	if err != nil {
		return fmt.Errorf("sign token: %w", err)
	}
	supervisor, err := broadcast.MintToken([]byte(secret), 2, "supervisor", []int64{1}, 12*time.Hour)
	if err != nil {
		return fmt.Errorf("sign token: %w", err)
	}
	base := "http://localhost:" + port + "/"
	fmt.Fprintf(w, `
walcast demo is running: a simulated election writes to PostgreSQL and
walcast streams every committed change.

  dashboard, admin:                      %s#token=%s
  dashboard, supervisor of committee 1:  %s#token=%s
  WebSocket:                             ws://localhost:%s/ws?token=<token>
  database:                              %s
  data folder (removed on exit):         %s

Ctrl-C to stop.
`, base, admin, base, supervisor, port, dbURL, dir)
	return nil
}

// seedDemo applies the schema and adds committees and candidates. It
// returns each committee's electors_count, indexed by committee id - 1.
func seedDemo(ctx context.Context, dbURL string) ([]int, error) {
	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		return nil, fmt.Errorf("connect to the demo database: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if _, err := conn.Exec(ctx, schema.SQL); err != nil {
		return nil, fmt.Errorf("apply schema: %w", err)
	}
	electors := make([]int, demoCommittees)
	for i := range electors {
		electors[i] = 200 + mrand.IntN(401)
		if _, err := conn.Exec(ctx, `INSERT INTO committee (id, code, name, electors_count) VALUES ($1, $2, $3, $4)`,
			i+1, fmt.Sprintf("C%02d", i+1), fmt.Sprintf("Committee %d", i+1), electors[i]); err != nil {
			return nil, fmt.Errorf("seed committees: %w", err)
		}
	}
	names := []string{"Amal Haddad", "Badr Nasser", "Carmen Ortiz", "Dana Levi"}
	for i := 0; i < demoCandidates; i++ {
		if _, err := conn.Exec(ctx, `INSERT INTO candidate (id, number, name) VALUES ($1, $2, $3)`, i+1, i+1, names[i]); err != nil {
			return nil, fmt.Errorf("seed candidates: %w", err)
		}
	}
	return electors, nil
}

// runDemoWorkload writes a few randomised changes per second, as agents,
// committees and counters would, until ctx is cancelled. A failed statement
// is logged and the workload goes on; it reconnects when the connection is
// lost.
func runDemoWorkload(ctx context.Context, dbURL string, electors []int, log *slog.Logger) error {
	var conn *pgx.Conn
	defer func() {
		if conn != nil {
			conn.Close(context.WithoutCancel(ctx))
		}
	}()
	results := time.Now() // results are due at once, then every ~10 s
	for {
		if conn == nil || conn.IsClosed() {
			c, err := pgx.Connect(ctx, dbURL)
			if err != nil {
				if ctx.Err() != nil {
					return nil
				}
				log.Warn("connect", "err", err)
			}
			conn = c
		}
		if conn != nil {
			var err error
			if time.Now().After(results) {
				err = demoResults(ctx, conn)
				results = time.Now().Add(9*time.Second + mrand.N(2*time.Second))
			} else {
				err = demoStep(ctx, conn, electors)
			}
			if err != nil && ctx.Err() == nil {
				log.Warn("workload statement failed", "err", err)
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(80*time.Millisecond + mrand.N(400*time.Millisecond)):
		}
	}
}

// demoStep makes one random change.
func demoStep(ctx context.Context, conn *pgx.Conn, electors []int) error {
	committee := 1 + mrand.IntN(len(electors))
	agent := 1 + mrand.IntN(demoAgents)
	elector := 1 + mrand.IntN(electors[committee-1])
	var err error
	switch r := mrand.IntN(100); {
	case r < 30: // an agent records a guarantee
		statuses := []string{"weak", "medium", "strong"}
		_, err = conn.Exec(ctx, `INSERT INTO guarantee (committee_id, user_id, elector_id, elector_name, status)
			VALUES ($1, $2, $3, $4, $5)`,
			committee, agent, elector, fmt.Sprintf("Elector %d-%d", committee, elector), statuses[mrand.IntN(3)])
	case r < 50: // an agent confirms a guarantee: one step stronger
		_, err = conn.Exec(ctx, `UPDATE guarantee
			SET status = CASE status WHEN 'weak' THEN 'medium' ELSE 'strong' END, updated_at = now()
			WHERE id = (SELECT id FROM guarantee WHERE status <> 'strong' ORDER BY random() LIMIT 1)`)
	case r < 55: // a guarantee turns out to be wrong
		_, err = conn.Exec(ctx, `DELETE FROM guarantee WHERE id = (SELECT id FROM guarantee ORDER BY random() LIMIT 1)`)
	case r < 75: // a committee marks an elector as present
		_, err = conn.Exec(ctx, `INSERT INTO attendance (committee_id, elector_id, user_id) VALUES ($1, $2, $3)
			ON CONFLICT (committee_id, elector_id) DO NOTHING`, committee, elector, agent)
	default: // votes are counted
		_, err = conn.Exec(ctx, `INSERT INTO vote_count (committee_id, candidate_id, votes) VALUES ($1, $2, $3)
			ON CONFLICT (committee_id, candidate_id) DO UPDATE SET votes = vote_count.votes + EXCLUDED.votes, updated_at = now()`,
			committee, 1+mrand.IntN(demoCandidates), 1+mrand.IntN(5))
	}
	return err
}

// demoResults upserts each committee's results and the election-wide ones
// (committee_id NULL) from the vote counts; unchanged rows are left alone.
func demoResults(ctx context.Context, conn *pgx.Conn) error {
	_, err := conn.Exec(ctx, `
INSERT INTO election_results (committee_id, candidate_id, total_votes, percentage, rank, generated_at)
SELECT committee_id, candidate_id, votes,
       coalesce(round(100.0 * votes / nullif(sum(votes) OVER (PARTITION BY committee_id), 0), 2), 0),
       rank() OVER (PARTITION BY committee_id ORDER BY votes DESC), now()
FROM vote_count
UNION ALL
SELECT NULL, candidate_id, sum(votes),
       coalesce(round(100.0 * sum(votes) / nullif(sum(sum(votes)) OVER (), 0), 2), 0),
       rank() OVER (ORDER BY sum(votes) DESC), now()
FROM vote_count GROUP BY candidate_id
ON CONFLICT (coalesce(committee_id, 0), candidate_id) DO UPDATE
SET total_votes = EXCLUDED.total_votes, percentage = EXCLUDED.percentage,
    rank = EXCLUDED.rank, generated_at = EXCLUDED.generated_at
WHERE election_results.total_votes IS DISTINCT FROM EXCLUDED.total_votes
   OR election_results.percentage IS DISTINCT FROM EXCLUDED.percentage
   OR election_results.rank IS DISTINCT FROM EXCLUDED.rank`)
	return err
}
