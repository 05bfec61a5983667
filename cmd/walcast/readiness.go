package main

import (
	"context"
	"time"

	"github.com/walcast/walcast/cdc"
)

// readiness answers /readyz: the bus, and capture when the process
// captures.
type readiness struct {
	bus     *processBus
	capture *cdc.Capture // nil unless the process captures
	// standbyReady: a capture-only process waiting as a standby is
	// ready, since waiting is its job.
	standbyReady bool
}

// check returns whether the process is ready, and why, by part.
func (r readiness) check(context.Context) (bool, map[string]string) {
	ok, bus := r.bus.health()
	details := map[string]string{"bus": bus}
	if r.capture == nil {
		return ok, details
	}
	st := r.capture.Status()
	capOK, detail := r.replication(st)
	details["replication"] = detail
	if st.Streaming && st.Liveness == "heartbeat" {
		details["heartbeat"] = "lag " + st.HeartbeatLag.Round(time.Millisecond).String()
	}
	return ok && capOK, details
}

// replication reports capture's part of /readyz.
func (r readiness) replication(st cdc.Status) (bool, string) {
	switch {
	case st.Stalled != "": // streaming but stalled, or a stalled session closed and being replaced
		return false, "stalled: " + st.Stalled
	case st.Streaming:
		return true, "streaming"
	case st.Waiting != "":
		return r.standbyReady, "standby: " + st.Waiting
	case st.LastError != "":
		return false, "not streaming: " + st.LastError
	}
	return false, "starting"
}
