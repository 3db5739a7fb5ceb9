package config

import (
	"fmt"
	"time"
)

// UnmarshalText parses a Go duration string ("30s", "1m30s", "250ms", "0").
// Anything else, and a negative duration, is an error.
func (d *Duration) UnmarshalText(text []byte) error {
	v, err := time.ParseDuration(string(text))
	if err != nil {
		return fmt.Errorf("invalid duration %q (write e.g. \"30s\")", text)
	}
	if v < 0 {
		return fmt.Errorf("negative duration %q (durations are 0 or more)", text)
	}
	d.Duration = v
	return nil
}

// MarshalText writes d as a Go duration string, which UnmarshalText reads
// back.
func (d Duration) MarshalText() ([]byte, error) {
	return []byte(d.String()), nil
}

// String returns d as a Go duration string ("1m30s", "0s").
func (d Duration) String() string {
	return d.Duration.String()
}
