package bus

import "strings"

// The D-Bus surface's names. Every instance owns Name(instance) and
// exports ObjectPath with Interface; clients match signals on
// Interface.
const (
	// NamePrefix starts every instance's well-known name.
	NamePrefix = "io.github.forkd."
	// ObjectPath is the object every instance exports.
	ObjectPath = "/io/github/forkd"
	// Interface is the interface of the methods, signals and properties.
	Interface = "io.github.forkd.Manager1"
)

// The D-Bus error names the methods return.
const (
	// ErrorReloadFailed: Reload failed (the config was rejected or the
	// new generation did not come up); the message says why.
	ErrorReloadFailed = "io.github.forkd.Error.ReloadFailed"
	// ErrorInvalidArgs: an argument is out of range.
	ErrorInvalidArgs = "io.github.forkd.Error.InvalidArgs"
	// ErrorFailed: any other failure; the message says what.
	ErrorFailed = "io.github.forkd.Error.Failed"
)

// Name returns the well-known D-Bus name of an instance:
// NamePrefix followed by the instance name escaped as systemd's
// bus_label_escape does — ASCII letters and digits are kept, every other
// byte and a leading digit become "_" and two lowercase hex digits, and ""
// becomes "_".
func Name(instance string) string {
	return NamePrefix + labelEscape(instance)
}

// InstanceFromName returns the instance whose Name is name; ok is
// false when name is not such a name.
func InstanceFromName(name string) (instance string, ok bool) {
	label, found := strings.CutPrefix(name, NamePrefix)
	if !found || label == "" {
		return "", false
	}
	if label == "_" {
		return "", true
	}
	var b strings.Builder
	for i := 0; i < len(label); i++ {
		c := label[i]
		if c != '_' {
			if !isASCIIAlnum(c) {
				return "", false
			}
			b.WriteByte(c)
			continue
		}
		if i+2 >= len(label) {
			return "", false
		}
		hi, lo := unhex(label[i+1]), unhex(label[i+2])
		if hi < 0 || lo < 0 {
			return "", false
		}
		b.WriteByte(byte(hi<<4 | lo))
		i += 2
	}
	return b.String(), true
}

func labelEscape(s string) string {
	if s == "" {
		return "_"
	}
	const hex = "0123456789abcdef"
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if isASCIIAlnum(c) && !(i == 0 && c >= '0' && c <= '9') {
			b.WriteByte(c)
			continue
		}
		b.WriteByte('_')
		b.WriteByte(hex[c>>4])
		b.WriteByte(hex[c&0xf])
	}
	return b.String()
}

func isASCIIAlnum(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
}

func unhex(c byte) int {
	switch {
	case c >= '0' && c <= '9':
		return int(c - '0')
	case c >= 'a' && c <= 'f':
		return int(c-'a') + 10
	}
	return -1
}
