package config

import (
	"strings"
	"testing"
)

func TestParseBind(t *testing.T) {
	long := "unix:/" + strings.Repeat("s", maxUnixPath-1) // exactly 107 bytes of path
	for _, tt := range []struct {
		in   string
		want Bind
	}{
		{"tcp://127.0.0.1:8000", Bind{Network: "tcp", Address: "127.0.0.1:8000"}},
		{"tcp://0.0.0.0:0", Bind{Network: "tcp", Address: "0.0.0.0:0"}},
		{"tcp://localhost:65535", Bind{Network: "tcp", Address: "localhost:65535"}},
		{"tcp://api.example.com.:80", Bind{Network: "tcp", Address: "api.example.com.:80"}},
		{"tcp://[::1]:8000", Bind{Network: "tcp", Address: "[::1]:8000"}},
		{"tcp://[::]:8000?name=web", Bind{Network: "tcp", Address: "[::]:8000", Name: "web"}},
		{"tcp://[fe80::1%eth0]:80", Bind{Network: "tcp", Address: "[fe80::1%eth0]:80"}},
		{"tcp://127.0.0.1:0080", Bind{Network: "tcp", Address: "127.0.0.1:80"}},
		{"unix:/run/app.sock", Bind{Network: "unix", Address: "/run/app.sock"}},
		{"unix:/run/app.sock?mode=0660&name=admin", Bind{Network: "unix", Address: "/run/app.sock", Mode: 0o660, Name: "admin"}},
		{"unix:/run/app.sock?name=a.b-c_d&mode=777", Bind{Network: "unix", Address: "/run/app.sock", Mode: 0o777, Name: "a.b-c_d"}},
		{long, Bind{Network: "unix", Address: strings.TrimPrefix(long, "unix:")}},
		{"tcp://127.0.0.1:1?name=" + strings.Repeat("n", 255), Bind{Network: "tcp", Address: "127.0.0.1:1", Name: strings.Repeat("n", 255)}},
		{"tcp://127.0.0.1:8000?nodelay=false", Bind{Network: "tcp", Address: "127.0.0.1:8000", Nagle: true}},
		{"tcp://127.0.0.1:8000?nodelay=true&name=web", Bind{Network: "tcp", Address: "127.0.0.1:8000", Name: "web"}},
	} {
		got, err := ParseBind(tt.in)
		tt.want.Raw = tt.in
		if err != nil || got != tt.want {
			t.Errorf("ParseBind(%q) = %+v, %v; want %+v", tt.in, got, err, tt.want)
			continue
		}
		var b Bind
		text, _ := got.MarshalText()
		if err := b.UnmarshalText(text); err != nil || b != got || got.String() != tt.in {
			t.Errorf("%q: round trip gave %+v, %v; String() = %q", tt.in, b, err, got.String())
		}
	}
}

func TestParseBind_invalid(t *testing.T) {
	for in, msg := range map[string]string{
		"":                                         "neither",
		"127.0.0.1:8000":                           "neither",
		"http://127.0.0.1:8000":                    "neither",
		"udp://127.0.0.1:53":                       "neither",
		"tcp://127.0.0.1":                          "the port is missing",
		"tcp://127.0.0.1:":                         "the port is missing",
		"tcp://:8000":                              "the host is missing",
		"tcp://[::1]":                              "the port is missing",
		"tcp://a:b:c":                              "IPv6 address goes in brackets",
		"tcp://[::1]x:80":                          "not host:port",
		"tcp://::1:8000":                           "IPv6 address goes in brackets",
		"tcp://127.0.0.1:65536":                    "not a number from 0 to 65535",
		"tcp://127.0.0.1:-1":                       "not a number",
		"tcp://127.0.0.1:http":                     "not a number",
		"tcp://127.0.0.1:+80":                      "not a number",
		"tcp://1.2.3:80":                           "not an IPv4 address",
		"tcp://[example.com]:80":                   "not an IPv6 address",
		"tcp://[1.2.3.4]:80":                       "not an IPv6 address",
		"tcp://bad_host!:80":                       "not a valid host name",
		"tcp://-bad.example:80":                    "not a valid host name",
		"tcp://a..b:80":                            "not a valid host name",
		"tcp://127.0.0.1:80/path":                  "not a number",
		"unix:run/app.sock":                        "must be absolute",
		"unix:":                                    "must be absolute",
		"unix:///run/app.sock":                     `a single "/"`,
		"unix:@abstract":                           "must be absolute",
		"unix:/" + strings.Repeat("s", 107):        "108 bytes, the limit is 107",
		"unix:/run/a\x00b":                         "NUL",
		"tcp://127.0.0.1:1?mode=0660":              "unix sockets only",
		"unix:/a?nodelay=false":                    "tcp sockets only",
		"tcp://127.0.0.1:1?nodelay=maybe":          "neither true nor false",
		"unix:/a?mode=0999":                        "not octal",
		"unix:/a?mode=1000":                        "not octal",
		"unix:/a?mode=":                            "not octal",
		"unix:/a?mode=0x1ff":                       "not octal",
		"unix:/a?mode=0":                           "nobody",
		"unix:/a?mode=0660&mode=0600":              "given twice",
		"unix:/a?name=":                            "1 to 255 characters",
		"unix:/a?name=" + strings.Repeat("n", 256): "1 to 255 characters",
		"unix:/a?name=a:b":                         "contains ':'",
		"unix:/a?name=a b":                         "contains ' '",
		"unix:/a?name=a\tb":                        `contains '\t'`,
		"unix:/a?name=é":                           "printable ASCII",
		"unix:/a?user=root":                        `unknown option "user"`,
		"unix:/a?mode":                             "not key=value",
		"unix:/a?":                                 "not key=value",
	} {
		b, err := ParseBind(in)
		if err == nil {
			t.Errorf("ParseBind(%q) = %+v, want an error", in, b)
			continue
		}
		if !strings.Contains(err.Error(), msg) || !strings.Contains(err.Error(), `write "tcp://host:port" or "unix:/absolute/path"`) {
			t.Errorf("ParseBind(%q) error %q, want it to contain %q and the hint", in, err, msg)
		}
		var u Bind
		if u.UnmarshalText([]byte(in)) == nil || u != (Bind{}) {
			t.Errorf("UnmarshalText(%q) accepted it or changed the Bind: %+v", in, u)
		}
	}
}
