package main

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/walcast/walcast/schema"
)

// insertSQL writes one transaction of rows in one statement (autocommit).
const insertSQL = `INSERT INTO guarantee (committee_id, user_id, elector_name, notes)
SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::text[], $4::text[])`

// writer inserts guarantee rows whose notes start with the send time in
// unix nanoseconds: "<nanos>:xxxx…", rowSize bytes in all.
type writer struct {
	url        string
	writers    int
	txSize     int
	rowSize    int
	committees int

	seq  atomic.Int64 // rows handed out; spreads rows over committees
	rows atomic.Int64 // rows committed
}

// run writes at rate rows/s (0: flat out) until d has passed or limit rows
// (0: no limit) are committed. It returns when every writer has stopped.
func (w *writer) run(ctx context.Context, rate float64, d time.Duration, limit int64) error {
	conns := make([]*pgx.Conn, w.writers)
	defer func() {
		for _, c := range conns {
			if c != nil {
				c.Close(context.Background())
			}
		}
	}()
	for i := range conns {
		c, err := pgx.Connect(ctx, w.url)
		if err != nil {
			return fmt.Errorf("writer: connect: %w", err)
		}
		conns[i] = c
	}
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	pad := strings.Repeat("x", w.rowSize)
	start := time.Now()
	var wg sync.WaitGroup
	errs := make([]error, len(conns))
	for i, c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = w.loop(ctx, c, writerStart(start, i, len(conns), w.txSize, rate), rate/float64(len(conns)), limit, pad)
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// writerStart is when writer i of n sends its first transaction: the
// writers share the rate, each sending every n/rate seconds, so without
// an offset they would all send at the same instants, in bursts of n
// transactions, and a change would wait behind the others of its burst
// through commit, capture and fan-out; the minimal server publishes one
// message at a time. Staggered by 1/rate seconds each, together they send
// evenly, one transaction every 1/rate seconds.
func writerStart(start time.Time, i, n, txSize int, rate float64) time.Time {
	if rate <= 0 || n <= 1 {
		return start
	}
	return start.Add(time.Duration(float64(i) * float64(time.Second) * float64(txSize) / rate))
}

func (w *writer) loop(ctx context.Context, c *pgx.Conn, start time.Time, rate float64, limit int64, pad string) error {
	var interval time.Duration
	if rate > 0 {
		interval = time.Duration(float64(time.Second) * float64(w.txSize) / rate)
	}
	committees := make([]int64, w.txSize)
	users := make([]int64, w.txSize)
	names := make([]string, w.txSize)
	notes := make([]string, w.txSize)
	for i := range names {
		names[i] = "bench"
	}
	stamp := make([]byte, 0, w.rowSize)
	// Bounded by the context's deadline and by limit.
	for k := int64(0); ; k++ {
		if interval > 0 {
			if wait := time.Until(start.Add(time.Duration(k) * interval)); wait > 0 {
				t := time.NewTimer(wait)
				select {
				case <-t.C:
				case <-ctx.Done():
					t.Stop()
					return nil
				}
			}
		}
		if ctx.Err() != nil {
			return nil
		}
		n := int64(w.txSize)
		base := w.seq.Add(n) - n
		if limit > 0 {
			if base >= limit {
				return nil
			}
			n = min(n, limit-base)
		}
		now := time.Now().UnixNano()
		stamp = strconv.AppendInt(stamp[:0], now, 10)
		stamp = append(stamp, ':')
		s := string(stamp) + pad[:max(0, w.rowSize-len(stamp))]
		for i := range n {
			committees[i] = (base+i)%int64(w.committees) + 1
			users[i] = (base+i)%1000 + 1
			notes[i] = s
		}
		if _, err := c.Exec(ctx, insertSQL, committees[:n], users[:n], names[:n], notes[:n]); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("writer: insert: %w", err)
		}
		w.rows.Add(n)
	}
}

// setupDatabase applies the election schema, adds committees 1..n and,
// when publication is set, creates the publication walcast reads, so that a
// slot made before walcast starts decodes with it.
func setupDatabase(ctx context.Context, url string, committees int, publication bool) error {
	c, err := pgx.Connect(ctx, url)
	if err != nil {
		return fmt.Errorf("setup: connect: %w", err)
	}
	defer c.Close(context.Background())
	if _, err := c.Exec(ctx, schema.SQL); err != nil {
		return fmt.Errorf("setup: apply schema: %w", err)
	}
	if _, err := c.Exec(ctx, `INSERT INTO committee (id, code, name)
		SELECT g, 'C' || g, 'Committee ' || g FROM generate_series(1, $1::int) g ON CONFLICT DO NOTHING`, committees); err != nil {
		return fmt.Errorf("setup: committees: %w", err)
	}
	var exists bool
	if !publication {
		return nil
	}
	if err := c.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_publication WHERE pubname = 'walcast')`).Scan(&exists); err != nil {
		return fmt.Errorf("setup: publication: %w", err)
	}
	if !exists {
		if _, err := c.Exec(ctx, `CREATE PUBLICATION walcast FOR TABLE guarantee, attendance, vote_count, election_results`); err != nil {
			return fmt.Errorf("setup: publication: %w", err)
		}
	}
	return nil
}

// sqlExec runs one statement on a fresh connection.
func sqlExec(ctx context.Context, url, sql string, args ...any) error {
	c, err := pgx.Connect(ctx, url)
	if err != nil {
		return err
	}
	defer c.Close(context.Background())
	_, err = c.Exec(ctx, sql, args...)
	return err
}

// sqlString runs a query returning one text value.
func sqlString(ctx context.Context, url, sql string) (string, error) {
	c, err := pgx.Connect(ctx, url)
	if err != nil {
		return "", err
	}
	defer c.Close(context.Background())
	var s string
	err = c.QueryRow(ctx, sql).Scan(&s)
	return s, err
}
