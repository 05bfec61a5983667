package broadcast

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/walcast/walcast/schema"
)

// An auth frame replaces a connection's token in place. The reader
// verifies and applies it owning the connection's writes, between two
// deliveries, so that one switch changes every kind of frame at once:
// everything sent after auth_ok (messages, replays, dashboards, presence,
// typing) is decided by the new token, and nothing decided under the old
// one follows auth_ok.

// Auth frames a connection may send: a refresh every few minutes is what
// clients need; each one costs a signature check, a presence_state, the
// dashboards again, and (when the role or committees change) a presence
// update for everyone who sees the user, on every replica.
const (
	authRate  = 0.5 // per second: one every 2 s, so tokens living only seconds still refresh
	authBurst = 3.0
)

// reauth answers an auth frame; the reader calls it owning the writes.
// The new token must name the same user. It returns once the token is in
// force, so the reader's next frame (a subscribe) is judged by it.
func (s *Server) reauth(ctx context.Context, c *client, token string) error {
	if ok, wait := c.authLimit.take(time.Now(), authRate, authBurst); !ok {
		// The token in force stays; the client may retry after wait.
		return c.send(ctx, errorFrame("rate_limited", fmt.Sprintf("too many auth frames: retry in %s; the current token stays in force", wait.Round(time.Second))))
	}
	p, err := s.cfg.Verifier.Verify(token)
	if err != nil {
		var ae *AuthError
		errors.As(err, &ae)
		reason := "bad token"
		if ae != nil {
			reason = ae.Reason
		}
		return c.send(ctx, errorFrame("auth_failed", "token refused: "+reason))
	}
	old := c.principal.Load()
	if p.UserID != old.UserID || p.HasUser != old.HasUser {
		_ = c.send(ctx, errorFrame("auth_failed", "a refreshed token must name the same user"))
		_ = c.flushOut() // the error goes out before the close frame
		c.done.Store(true)
		c.ws.Close(CloseAuthChanged, "token names another user")
		return errors.New("auth frame named another user")
	}
	if err := s.applyAuth(ctx, c, p); err != nil {
		return err
	}
	c.expires.Store(p.Expires.UnixNano())
	c.setTimer()
	return nil
}

// applyAuth puts p in force; the owner of the writes calls it. In order: the
// principal (which every later delivery decision reads), the
// subscription narrowed to it, the hub's and presence's indexes, then
// auth_ok, the fresh presence_state (frames queued under the old token
// are dropped by their epoch), and the dashboards p may see, which
// supersede the older dashboard messages still in the window.
func (s *Server) applyAuth(ctx context.Context, c *client, p *Principal) error {
	c.principal.Store(p)
	if f := c.filter.Load(); f != nil && f.committees != nil {
		c.filter.Store(f.narrowTo(p))
	}
	s.cfg.Hub.reindex(c)
	state := s.presence.reauth(c)
	if err := c.send(ctx, []byte(`{"type":"auth_ok"}`)); err != nil {
		return err
	}
	if state != nil {
		if err := c.send(ctx, state); err != nil {
			return err
		}
	}
	if c.filter.Load().allows(&schema.Message{Type: schema.TypeDashboard}) {
		return s.resendDashboards(ctx, c)
	}
	return nil
}
