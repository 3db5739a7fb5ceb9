package jobs

import (
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"time"
)

// The environment variables that identify a run to the process.
const (
	// EnvSchedule carries the schedule's name.
	EnvSchedule = "FORKD_SCHEDULE"
	// EnvRunID carries the run's ID (Run.ID).
	EnvRunID = "FORKD_RUN_ID"
	// EnvScheduledAt carries the due time the run is for, in RFC 3339.
	EnvScheduledAt = "FORKD_SCHEDULED_AT"
	// EnvFencingToken carries a cluster job's fencing token: a number
	// that only grows from one holder (or claimed period) to the next
	// (see package cluster).
	EnvFencingToken = "FORKD_FENCING_TOKEN"
)

// Vars are the variables a run gets from forkd with what they carry;
// a schedule's env cannot set them.
func Vars() map[string]string {
	return map[string]string{
		EnvSchedule:    "the schedule's name",
		EnvRunID:       "the run's unique ID",
		EnvScheduledAt: "the due time the run is for",
	}
}

// Run identifies one run of a schedule.
type Run struct {
	// Schedule is the schedule's name.
	Schedule string
	// ID is unique to the run and sorts as the runs started (see IDs).
	ID string
	// ScheduledAt is the due time the run is for: a time from the
	// schedule's Timing, before any jitter; for a run asked for by hand,
	// when it was asked for.
	ScheduledAt time.Time
}

// Env returns the run's variables as "KEY=value" strings, to be added to
// the environment of the run's process: FORKD_SCHEDULE, FORKD_RUN_ID and
// FORKD_SCHEDULED_AT (RFC 3339 with the offset of the time's zone, and
// fractional seconds only when there are any).
func (r Run) Env() []string {
	return []string{
		EnvSchedule + "=" + r.Schedule,
		EnvRunID + "=" + r.ID,
		EnvScheduledAt + "=" + r.ScheduledAt.Format(time.RFC3339Nano),
	}
}

// IDs makes run IDs: UUIDs of version 7 (RFC 9562) in their usual text
// form, "0195c9b4-6f1e-7a3c-8d2e-4b5f6a7b8c9d". The first 60 bits are the
// time the ID was made, to the 4096th of a millisecond, and the last 62 are
// random. IDs from one IDs value always increase, even when made in the
// same instant or when the clock steps back, so as strings they sort in the
// order they were made; IDs from different processes sort by the time they
// were made. The zero IDs is ready to use; it is not safe for concurrent
// use.
type IDs struct {
	last uint64 // the time bits of the last ID made
}

// New returns a new run ID for a run started at now.
func (g *IDs) New(now time.Time) string {
	ns := now.UnixNano()
	ms := uint64(ns / 1e6)
	frac := uint64(ns%1e6) * 4096 / 1e6 // RFC 9562 §6.2, method 3
	ts := ms<<12 | frac
	if ts <= g.last {
		ts = g.last + 1
	}
	g.last = ts

	var b [16]byte
	rand.Read(b[8:])                                               // never fails (crypto/rand)
	binary.BigEndian.PutUint64(b[:8], (ts>>12)<<16|7<<12|ts&0xfff) // unix_ts_ms, ver, rand_a
	b[8] = b[8]&0x3f | 0x80                                        // variant 10

	var s [36]byte
	hex.Encode(s[0:8], b[0:4])
	s[8] = '-'
	hex.Encode(s[9:13], b[4:6])
	s[13] = '-'
	hex.Encode(s[14:18], b[6:8])
	s[18] = '-'
	hex.Encode(s[19:23], b[8:10])
	s[23] = '-'
	hex.Encode(s[24:], b[10:])
	return string(s[:])
}
