package bus

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"strconv"
)

// The limits of the server side of the authentication handshake: a peer
// that sends longer lines or more of them is disconnected.
const (
	maxAuthLine     = 1024
	maxAuthCommands = 32
)

// errAuthRejected reports a peer that did not authenticate.
var errAuthRejected = errors.New("bus: peer not authenticated")

// serverHandshake runs the server side of D-Bus's authentication
// protocol (the SASL profile of the D-Bus specification) on a connection
// whose peer is the user uid (from SO_PEERCRED): the credentials byte,
// then EXTERNAL — with the uid the peer claims, or none (DATA with no
// response), which must be uid — and BEGIN. NEGOTIATE_UNIX_FD is answered
// with ERROR: the peer-to-peer connection passes no file descriptors (the
// interface has no fd arguments). Every other mechanism is rejected. It
// returns nil once the peer sent BEGIN after OK; in then holds what the
// peer sent after BEGIN, which is the start of its first message.
func serverHandshake(in *bufio.Reader, out io.Writer, uid uint32, guid string) error {
	nul, err := in.ReadByte()
	if err != nil {
		return fmt.Errorf("read the credentials byte: %w", err)
	}
	if nul != 0 {
		return fmt.Errorf("%w: first byte %#x, not NUL", errAuthRejected, nul)
	}
	const (
		waitingForAuth = iota
		waitingForData
		waitingForBegin
	)
	state := waitingForAuth
	reply := func(line string) error {
		_, err := io.WriteString(out, line+"\r\n")
		return err
	}
	// check answers an EXTERNAL identity: hex-encoded decimal uid, or
	// empty for "the one you see".
	check := func(identity []byte) error {
		if len(identity) > 0 {
			id, err := hex.DecodeString(string(identity))
			if err != nil {
				return reply("ERROR \"identity is not hex\"")
			}
			if claimed, err := strconv.ParseUint(string(id), 10, 32); err != nil || uint32(claimed) != uid {
				return reply("REJECTED EXTERNAL")
			}
		}
		state = waitingForBegin
		return reply("OK " + guid)
	}
	for range maxAuthCommands {
		line, err := readAuthLine(in)
		if err != nil {
			return err
		}
		cmd, arg, _ := bytes.Cut(line, []byte(" "))
		switch {
		case string(cmd) == "BEGIN" && state == waitingForBegin:
			return nil
		case string(cmd) == "BEGIN":
			return fmt.Errorf("%w: BEGIN before OK", errAuthRejected)
		case string(cmd) == "AUTH" && state == waitingForAuth:
			mech, resp, hasResp := bytes.Cut(arg, []byte(" "))
			switch {
			case string(mech) != "EXTERNAL":
				err = reply("REJECTED EXTERNAL")
			case hasResp:
				err = check(resp)
			default:
				state = waitingForData
				err = reply("DATA")
			}
		case string(cmd) == "DATA" && state == waitingForData:
			err = check(arg)
		case string(cmd) == "NEGOTIATE_UNIX_FD" && state == waitingForBegin:
			err = reply("ERROR \"no file descriptor passing on this connection\"")
		case string(cmd) == "CANCEL" || string(cmd) == "ERROR":
			state = waitingForAuth
			err = reply("REJECTED EXTERNAL")
		default:
			err = reply("ERROR \"unexpected command\"")
		}
		if err != nil {
			return fmt.Errorf("write the handshake: %w", err)
		}
	}
	return fmt.Errorf("%w: more than %d handshake commands", errAuthRejected, maxAuthCommands)
}

// readAuthLine reads one \r\n-terminated handshake line, without it.
func readAuthLine(in *bufio.Reader) ([]byte, error) {
	var line []byte
	for {
		b, err := in.ReadByte()
		if err != nil {
			return nil, fmt.Errorf("read the handshake: %w", err)
		}
		if b == '\n' {
			if len(line) == 0 || line[len(line)-1] != '\r' {
				return nil, fmt.Errorf("%w: line not ended by CRLF", errAuthRejected)
			}
			return line[:len(line)-1], nil
		}
		if len(line) >= maxAuthLine {
			return nil, fmt.Errorf("%w: handshake line longer than %d bytes", errAuthRejected, maxAuthLine)
		}
		line = append(line, b)
	}
}

// newGUID returns a server GUID for the OK reply: 32 hex digits.
func newGUID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// authedTransport is an authenticated peer connection handed to godbus.
// godbus has only the client side of the handshake, and reads messages
// only once its Auth has run: so Auth runs against this transport, which
// plays the server's part itself — it answers Auth's lines (REJECTED
// EXTERNAL to the list request, OK to EXTERNAL) without the peer seeing
// them — and from Auth's BEGIN on passes everything through: reads from
// rest (what the real handshake left buffered, then the peer), writes to
// the peer.
type authedTransport struct {
	rest   io.Reader
	peer   io.WriteCloser
	script *bytes.Reader // what Auth is answered; then rest
	begun  bool          // Auth wrote BEGIN: writes go to the peer
}

func newAuthedTransport(rest io.Reader, peer io.WriteCloser, guid string) *authedTransport {
	return &authedTransport{rest: rest, peer: peer,
		script: bytes.NewReader([]byte("REJECTED EXTERNAL\r\nOK " + guid + "\r\n"))}
}

func (t *authedTransport) Read(p []byte) (int, error) {
	if t.script.Len() > 0 {
		return t.script.Read(p)
	}
	return t.rest.Read(p)
}

func (t *authedTransport) Write(p []byte) (int, error) {
	if !t.begun {
		// Auth writes each line with one Write; the first after the
		// script is BEGIN.
		t.begun = string(p) == "BEGIN\r\n"
		return len(p), nil
	}
	return t.peer.Write(p)
}

func (t *authedTransport) Close() error { return t.peer.Close() }
