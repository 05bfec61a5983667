package main

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// clockTick is the unit of utime and stime in /proc/<pid>/stat: USER_HZ,
// which is 100 on every Linux this runs on.
const clockTick = 10 * time.Millisecond

// cpuTime returns the user plus system CPU time of pid so far.
func cpuTime(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, fmt.Errorf("read cpu time of %d: %w", pid, err)
	}
	// The command name (field 2) may hold spaces and parentheses: fields
	// are counted after the last ')'.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("read cpu time of %d: malformed stat", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	// f[0] is field 3 (state); utime and stime are fields 14 and 15.
	if len(f) < 13 {
		return 0, fmt.Errorf("read cpu time of %d: short stat", pid)
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("read cpu time of %d: bad utime/stime", pid)
	}
	return time.Duration(ut+st) * clockTick, nil
}

// memory is a process's resident memory in bytes: now and at its peak.
type memory struct {
	RSS, HWM int64
}

func readMemory(pid int) (memory, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return memory{}, fmt.Errorf("read memory of %d: %w", pid, err)
	}
	var m memory
	for _, line := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok || (k != "VmRSS" && k != "VmHWM") {
			continue
		}
		kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		if err != nil {
			return memory{}, fmt.Errorf("read memory of %d: %s: %w", pid, k, err)
		}
		if k == "VmRSS" {
			m.RSS = kb << 10
		} else {
			m.HWM = kb << 10
		}
	}
	return m, nil
}

// cpuMeter measures a process's CPU use over an interval, as a percentage
// of one core.
type cpuMeter struct {
	pid   int
	start time.Time
	cpu0  time.Duration
}

func startCPU(pid int) cpuMeter {
	c, _ := cpuTime(pid)
	return cpuMeter{pid: pid, start: time.Now(), cpu0: c}
}

// stop returns CPU seconds used and percent of one core since start.
func (m cpuMeter) stop() (cpu time.Duration, pct float64) {
	if m.pid == 0 {
		return 0, 0
	}
	c, err := cpuTime(m.pid)
	if err != nil {
		return 0, 0
	}
	cpu = c - m.cpu0
	return cpu, 100 * cpu.Seconds() / time.Since(m.start).Seconds()
}

// loadAvg is /proc/loadavg without its last field (the newest pid).
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(b))
	if len(f) < 4 {
		return "unknown"
	}
	return strings.Join(f[:4], " ")
}

// machineBusy measures how busy all cores were over an interval, from
// the first line of /proc/stat.
type machineBusy struct{ busy, total int64 }

func startMachineBusy() machineBusy {
	b, t := cpuTotals()
	return machineBusy{b, t}
}

// stop returns the percentage of all cores' time that was busy.
func (m machineBusy) stop() float64 {
	b, t := cpuTotals()
	if t <= m.total {
		return 0
	}
	return 100 * float64(b-m.busy) / float64(t-m.total)
}

// cpuTotals returns the busy and total jiffies of all cores (idle and
// iowait count as not busy; guest time is already in user).
func cpuTotals() (busy, total int64) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 8 || f[0] != "cpu" {
		return 0, 0
	}
	for i, s := range f[1:min(len(f), 9)] { // user nice system idle iowait irq softirq steal
		v, _ := strconv.ParseInt(s, 10, 64)
		total += v
		if i != 3 && i != 4 {
			busy += v
		}
	}
	return busy, total
}
