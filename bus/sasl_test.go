package bus

import (
	"bufio"
	"bytes"
	"errors"
	"strings"
	"testing"
)

// handshake runs serverHandshake for a peer with uid 1000 that sends
// client, and returns what the server answered and its error.
func handshake(client string) (string, error) {
	var out bytes.Buffer
	err := serverHandshake(bufio.NewReader(strings.NewReader(client)), &out, 1000, "0123456789abcdef0123456789abcdef")
	return out.String(), err
}

func TestServerHandshake(t *testing.T) {
	const ok = "OK 0123456789abcdef0123456789abcdef\r\n"
	hex1000 := "31303030" // "1000"
	for _, c := range []struct {
		name, client, answers string
		fails                 bool
	}{
		{name: "godbus", client: "\x00AUTH\r\nAUTH EXTERNAL " + hex1000 + "\r\nNEGOTIATE_UNIX_FD\r\nBEGIN\r\n",
			answers: "REJECTED EXTERNAL\r\n" + ok + "ERROR \"no file descriptor passing on this connection\"\r\n"},
		{name: "sd-bus, no identity", client: "\x00AUTH EXTERNAL\r\nDATA\r\nBEGIN\r\n",
			answers: "DATA\r\n" + ok},
		{name: "identity in DATA", client: "\x00AUTH EXTERNAL\r\nDATA " + hex1000 + "\r\nBEGIN\r\n",
			answers: "DATA\r\n" + ok},
		{name: "other uid, then the right one", client: "\x00AUTH EXTERNAL 30\r\nAUTH EXTERNAL " + hex1000 + "\r\nBEGIN\r\n",
			answers: "REJECTED EXTERNAL\r\n" + ok},
		{name: "other mechanism", client: "\x00AUTH DBUS_COOKIE_SHA1 31\r\nAUTH ANONYMOUS\r\nBEGIN\r\n",
			answers: "REJECTED EXTERNAL\r\nREJECTED EXTERNAL\r\n", fails: true},
		{name: "cancel after OK", client: "\x00AUTH EXTERNAL\r\nDATA\r\nCANCEL\r\nBEGIN\r\n",
			answers: "DATA\r\n" + ok + "REJECTED EXTERNAL\r\n", fails: true},
		{name: "no credentials byte", client: "AUTH EXTERNAL\r\n", fails: true},
		{name: "no CR", client: "\x00AUTH\n", fails: true},
		{name: "not hex", client: "\x00AUTH EXTERNAL zz\r\n", answers: "ERROR \"identity is not hex\"\r\n", fails: true},
		{name: "too long", client: "\x00AUTH " + strings.Repeat("x", 2000) + "\r\n", fails: true},
		{name: "endless", client: "\x00" + strings.Repeat("AUTH\r\n", 100), fails: true},
	} {
		t.Run(c.name, func(t *testing.T) {
			got, err := handshake(c.client)
			if (err != nil) != c.fails {
				t.Errorf("error %v, want failure %v", err, c.fails)
			}
			if c.answers != "" && !strings.HasPrefix(got, c.answers) {
				t.Errorf("answers %q, want %q", got, c.answers)
			}
			if err == nil && !strings.Contains(got, "OK ") {
				t.Errorf("BEGIN accepted without OK: %q", got)
			}
		})
	}
}

// TestServerHandshake_LeavesMessage checks that what the peer sends after
// BEGIN stays readable: the start of its first message.
func TestServerHandshake_LeavesMessage(t *testing.T) {
	in := bufio.NewReader(strings.NewReader("\x00AUTH EXTERNAL\r\nDATA\r\nBEGIN\r\nl\x01\x00\x01"))
	if err := serverHandshake(in, new(bytes.Buffer), 0, "g"); err != nil {
		t.Fatal(err)
	}
	rest := new(bytes.Buffer)
	if _, err := rest.ReadFrom(in); err != nil || rest.String() != "l\x01\x00\x01" {
		t.Errorf("after BEGIN: %q, %v", rest, err)
	}
}

// FuzzServerHandshake feeds the handshake what any local process can
// send: it always returns, and never accepts BEGIN before OK.
func FuzzServerHandshake(f *testing.F) {
	f.Add("\x00AUTH\r\nAUTH EXTERNAL 31303030\r\nNEGOTIATE_UNIX_FD\r\nBEGIN\r\n")
	f.Add("\x00AUTH EXTERNAL\r\nDATA\r\nBEGIN\r\n")
	f.Add("\x00AUTH EXTERNAL 30\r\nBEGIN\r\n")
	f.Add("\x00CANCEL\r\nERROR x\r\nDATA\r\n")
	f.Fuzz(func(t *testing.T, client string) {
		got, err := handshake(client)
		if err != nil {
			if !errors.Is(err, errAuthRejected) && !strings.Contains(err.Error(), "read the handshake") &&
				!strings.Contains(err.Error(), "credentials byte") {
				t.Errorf("unexpected error %v", err)
			}
			return
		}
		if !strings.Contains(got, "OK ") {
			t.Errorf("BEGIN accepted without OK: %q", got)
		}
	})
}
