package config

import (
	"fmt"
	"net"
	"strconv"
	"strings"
)

// maxUnixPath is the longest socket path a sockaddr_un holds (108 bytes,
// one of which is the terminating NUL).
const maxUnixPath = 107

// bindHint is appended to every bind error: what a valid bind looks like.
const bindHint = `write "tcp://host:port" or "unix:/absolute/path", options after "?": mode=0660 (unix), name=web, nodelay=false (tcp)`

// ParseBind parses one listening address:
//
//	tcp://127.0.0.1:8000      IPv4
//	tcp://example.com:8000    host name
//	tcp://[::1]:8000          IPv6, in brackets ([::] for every address)
//	unix:/run/myapp.sock      unix socket, absolute path of at most 107 bytes
//
// The port (0–65535) is required. Options follow a "?", joined by "&":
// mode=0660 (octal, at most 0777, unix sockets only) sets the socket file's
// permissions; name=web (1–255 characters, no ':', whitespace or control
// characters) names the socket in LISTEN_FDNAMES; nodelay=false (tcp
// sockets only) keeps Nagle's algorithm, which forkd otherwise turns off
// (TCP_NODELAY, inherited by every connection a worker accepts).
func ParseBind(s string) (Bind, error) {
	b := Bind{Raw: s}
	addr, query, hasQuery := strings.Cut(s, "?")
	switch {
	case strings.HasPrefix(addr, "tcp://"):
		b.Network = "tcp"
		a, err := parseTCPAddress(strings.TrimPrefix(addr, "tcp://"))
		if err != nil {
			return Bind{}, bindError(s, err.Error())
		}
		b.Address = a
	case strings.HasPrefix(addr, "unix:"):
		b.Network = "unix"
		p := strings.TrimPrefix(addr, "unix:")
		switch {
		case strings.HasPrefix(p, "//"):
			return Bind{}, bindError(s, `a unix address has a single "/" after "unix:" (unix:/run/app.sock)`)
		case !strings.HasPrefix(p, "/"):
			return Bind{}, bindError(s, "the socket path must be absolute")
		case len(p) > maxUnixPath:
			return Bind{}, bindError(s, fmt.Sprintf("the socket path is %d bytes, the limit is %d", len(p), maxUnixPath))
		case strings.IndexByte(p, 0) >= 0:
			return Bind{}, bindError(s, "the socket path contains a NUL byte")
		case strings.HasSuffix(p, "/"):
			return Bind{}, bindError(s, `the socket path ends in "/", which names a directory`)
		}
		b.Address = p
	default:
		return Bind{}, bindError(s, `it starts with neither "tcp://" nor "unix:"`)
	}
	if hasQuery {
		if err := b.parseOptions(query); err != nil {
			return Bind{}, bindError(s, err.Error())
		}
	}
	return b, nil
}

// bindError is the error for an invalid bind string s.
func bindError(s, why string) error {
	return fmt.Errorf("invalid bind %q: %s (%s)", s, why, bindHint)
}

// parseTCPAddress checks host:port and returns it normalised by
// net.JoinHostPort.
func parseTCPAddress(hp string) (string, error) {
	host, port, err := net.SplitHostPort(hp)
	if err != nil {
		if !strings.Contains(hp, ":") || strings.HasPrefix(hp, "[") && strings.HasSuffix(hp, "]") {
			return "", fmt.Errorf("the port is missing")
		}
		if strings.Count(hp, ":") > 1 && !strings.HasPrefix(hp, "[") {
			return "", fmt.Errorf("an IPv6 address goes in brackets, e.g. tcp://[::1]:8000")
		}
		return "", fmt.Errorf("not host:port")
	}
	if port == "" {
		return "", fmt.Errorf("the port is missing")
	}
	n, err := strconv.ParseUint(port, 10, 16)
	if err != nil || strings.TrimLeft(port, "0123456789") != "" {
		return "", fmt.Errorf("port %q is not a number from 0 to 65535", port)
	}
	if host == "" {
		return "", fmt.Errorf("the host is missing (0.0.0.0 or [::] listen on every address)")
	}
	if strings.HasPrefix(hp, "[") {
		addr, _, _ := strings.Cut(host, "%") // a zone (fe80::1%eth0) is allowed
		ip := net.ParseIP(addr)
		if ip == nil || !strings.Contains(addr, ":") {
			return "", fmt.Errorf("%q in brackets is not an IPv6 address", host)
		}
	} else if err := checkHost(host); err != nil {
		return "", err
	}
	return net.JoinHostPort(host, strconv.FormatUint(n, 10)), nil
}

// checkHost reports whether host is an IPv4 address or a syntactically valid
// host name.
func checkHost(host string) error {
	if strings.Trim(host, "0123456789.") == "" {
		if ip := net.ParseIP(host); ip == nil || ip.To4() == nil {
			return fmt.Errorf("%q is not an IPv4 address", host)
		}
		return nil
	}
	name := strings.TrimSuffix(host, ".")
	if len(name) > 253 {
		return fmt.Errorf("host name %q is longer than 253 characters", host)
	}
	for _, label := range strings.Split(name, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return fmt.Errorf("%q is not a valid host name", host)
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				return fmt.Errorf("%q is not a valid host name", host)
			}
		}
	}
	return nil
}

// parseOptions reads the options after "?" into b.
func (b *Bind) parseOptions(query string) error {
	seen := map[string]bool{}
	for _, opt := range strings.Split(query, "&") {
		k, v, ok := strings.Cut(opt, "=")
		if !ok {
			return fmt.Errorf("option %q is not key=value", opt)
		}
		if seen[k] {
			return fmt.Errorf("option %q is given twice", k)
		}
		seen[k] = true
		switch k {
		case "mode":
			if b.Network != "unix" {
				return fmt.Errorf("mode applies to unix sockets only")
			}
			m, err := strconv.ParseUint(v, 8, 32)
			if err != nil || v == "" || strings.Trim(v, "01234567") != "" || m > 0o777 {
				return fmt.Errorf("mode %q is not octal permission bits from 0001 to 0777", v)
			}
			if m == 0 {
				return fmt.Errorf("mode %q would let nobody connect", v)
			}
			b.Mode = uint32(m)
		case "name":
			if err := checkFDName(v); err != nil {
				return err
			}
			b.Name = v
		case "nodelay":
			if b.Network != "tcp" {
				return fmt.Errorf("nodelay applies to tcp sockets only")
			}
			on, err := strconv.ParseBool(v)
			if err != nil {
				return fmt.Errorf("nodelay %q is neither true nor false", v)
			}
			b.Nagle = !on
		default:
			return fmt.Errorf("unknown option %q (the options are mode, name and nodelay)", k)
		}
	}
	return nil
}

// checkFDName reports whether name can be a LISTEN_FDNAMES entry: 1–255
// printable ASCII characters other than ':' and space (systemd accepts no
// more than this, less the space).
func checkFDName(name string) error {
	if name == "" || len(name) > 255 {
		return fmt.Errorf("name %q must be 1 to 255 characters", name)
	}
	for i := 0; i < len(name); i++ {
		if c := name[i]; c == ':' || c <= ' ' || c >= 0x7f {
			return fmt.Errorf("name %q contains %q (use printable ASCII without ':' or spaces)", name, c)
		}
	}
	return nil
}

// UnmarshalText parses text with ParseBind.
func (b *Bind) UnmarshalText(text []byte) error {
	v, err := ParseBind(string(text))
	if err != nil {
		return err
	}
	*b = v
	return nil
}

// MarshalText returns Raw, which UnmarshalText reads back.
func (b Bind) MarshalText() ([]byte, error) {
	return []byte(b.Raw), nil
}

// String returns the bind as written (Raw).
func (b Bind) String() string {
	return b.Raw
}
